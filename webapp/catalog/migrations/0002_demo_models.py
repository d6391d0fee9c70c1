"""Registers the built-in demo models, so a fresh install (./run.sh) lists them; a worker inspects them."""
from django.db import migrations

from webapp.catalog.demo import register_demo_models


def register(apps, schema_editor):
    register_demo_models(apps.get_model("catalog", "BaseModel"))


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]
    operations = [migrations.RunPython(register, migrations.RunPython.noop)]
