"""Seeds a throwaway database for scripts/api_fuzz.sh: a user in a team with an API token, a ready dataset and
jobs in a few states. Prints the token on its last line. Run through `manage.py shell`."""
import json

from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from webapp.accounts.tokens import issue_token
from webapp.catalog.models import BaseModel
from webapp.datasets.models import Dataset
from webapp.jobs.models import Job
from webapp.teams.accounts import add_user_to_team
from webapp.teams.models import Team

user = get_user_model().objects.create_user("fuzz", password="fuzz-pw-12345")
add_user_to_team("fuzz", "Fuzz")
team = Team.objects.get(name="Fuzz")
rows = "".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(20))
name = default_storage.save("datasets/fuzz.jsonl", ContentFile(rows.encode()))
dataset = Dataset.objects.create(team=team, name="d", original_filename="d.jsonl", file=name, status="ready",
                                 task="causal-lm", format="prompt_completion", rows=20)
model = BaseModel.objects.first()
for state in ("queued", "succeeded", "failed"):
    Job.objects.create(team=team, name=state, base_model=model, dataset=dataset, task="causal-lm", state=state)
print(issue_token(user, team, "fuzz")[1])
