"""`manage.py register_demo_models`: add the demo models to the catalog if missing and have a worker inspect
those not inspected yet (./run.sh runs it once Redis is up)."""
from django.core.management.base import BaseCommand

from webapp.catalog.demo import DEMO_MODELS, register_demo_models
from webapp.catalog.inspection import request_inspection
from webapp.catalog.models import BaseModel
from webapp.jobs.queue import BrokerUnreachable


class Command(BaseCommand):
    help = "Register the built-in demo models and enqueue inspection of those not inspected yet."

    def handle(self, *args, **options):
        register_demo_models(BaseModel)
        for entry in BaseModel.objects.filter(source__in=[d["source"] for d in DEMO_MODELS]):
            if entry.status != BaseModel.Status.READY:
                try:
                    request_inspection(entry)
                except BrokerUnreachable as error:
                    self.stderr.write(f"{entry.source}: could not reach the broker to inspect it ({error}); "
                                      "run this command again once Redis is up")
                    continue
            self.stdout.write(f"{entry.source}: {entry.get_status_display().lower()}")
