"""`python -m trainer.samples OUTDIR`: write every sample dataset into OUTDIR and print their paths."""
import sys

from trainer.samples import SAMPLES, write_sample

if len(sys.argv) != 2:
    sys.exit("usage: python -m trainer.samples OUTDIR")
for name in SAMPLES:
    print(write_sample(name, sys.argv[1]))
