"""Forms of the results app: picking jobs to compare, and a playground request (job, input, sampling)."""
import secrets

from django import forms

from webapp.results.playground import limits

MIN_COMPARE, MAX_COMPARE = 2, 4


class JobChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, job):
        return f"#{job.pk} {job.name} ({job.base_model}, {job.task})"


class JobsChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, job):
        return f"#{job.pk} {job.name} ({job.base_model}, {job.task})"


class CompareForm(forms.Form):
    job = JobsChoiceField(queryset=None, widget=forms.CheckboxSelectMultiple, label="Jobs",
                          error_messages={"invalid_choice": "Job %(value)s is not one of your team's finished jobs.",
                                          "invalid_pk_value": "“%(pk)s” is not a job number."})

    def __init__(self, jobs, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["job"].queryset = jobs

    def clean_job(self):
        picked = self.cleaned_data["job"]
        if not MIN_COMPARE <= len(picked) <= MAX_COMPARE:
            raise forms.ValidationError(f"Pick {MIN_COMPARE} to {MAX_COMPARE} jobs to compare (you picked "
                                        f"{len(picked)}).")
        return picked


class PlaygroundForm(forms.Form):
    job = JobChoiceField(queryset=None, empty_label=None, label="Fine-tuned job",
                         error_messages={"invalid_choice": "Pick one of your team's finished jobs."})
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 5}), strip=False, label="Prompt",
                             error_messages={"required": "Type a prompt (or, for a classifier, a text) first."})
    temperature = forms.FloatField(min_value=0, max_value=2, initial=0.7,
                                   help_text="0 always picks the likeliest token; higher is more varied.")
    top_p = forms.FloatField(min_value=0.01, max_value=1, initial=0.95, label="Top-p",
                             help_text="Sample only from the likeliest tokens that together hold this probability.")
    max_new_tokens = forms.IntegerField(min_value=1, initial=64, label="Max new tokens",
                                        help_text="The longest answer, in tokens.")
    seed = forms.IntegerField(required=False, min_value=0, max_value=2**31 - 1, label="Seed",
                              help_text="Blank draws a new one each run; the same seed and settings give the same "
                                        "answers.")

    def __init__(self, jobs, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["job"].queryset = jobs
        bounds = limits()
        self.fields["max_new_tokens"].widget.attrs["max"] = bounds["max_new_tokens"]
        self.fields["max_new_tokens"].validators.append(_max_tokens_validator(bounds["max_new_tokens"]))
        self.fields["prompt"].widget.attrs["maxlength"] = bounds["max_prompt_chars"]
        self.max_prompt_chars = bounds["max_prompt_chars"]

    def clean_prompt(self):
        prompt = self.cleaned_data["prompt"]
        if not prompt.strip():
            raise forms.ValidationError("Type a prompt (or, for a classifier, a text) first.")
        if len(prompt) > self.max_prompt_chars:
            raise forms.ValidationError(f"The prompt is {len(prompt)} characters; the playground takes at most "
                                        f"{self.max_prompt_chars}.")
        return prompt

    def sampling(self) -> dict:
        """The sampling settings both models use, with one seed for both (the one given, else a fresh one, so a
        rerun can differ) so that the two answers differ only by their weights."""
        data = self.cleaned_data
        seed = data.get("seed")
        return {"temperature": data["temperature"], "top_p": data["top_p"], "max_new_tokens": data["max_new_tokens"],
                "seed": secrets.randbelow(2**31) if seed is None else seed}


def _max_tokens_validator(limit: int):
    def check(value):
        if value is not None and value > limit:
            raise forms.ValidationError(f"Max new tokens is at most {limit} in the playground.")
    return check
