"""Fine-tuning jobs: create (with a live parameter/memory estimate), queue, watch, cancel, results, downloads, playground."""
