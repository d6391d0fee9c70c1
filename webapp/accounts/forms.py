"""The form that names a new API token and picks the team it acts for."""
from django import forms

from webapp.teams.models import Team


class NewTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. “nightly eval script”.")
    team = forms.ModelChoiceField(queryset=Team.objects.none(), empty_label=None,
                                  help_text="The token sees and creates this team's datasets and jobs only.")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = Team.objects.filter(members=user)
