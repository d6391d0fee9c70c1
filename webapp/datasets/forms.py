"""Forms of the datasets pages: upload, how to measure lengths (base model tokenizer, max length), column mapping."""
from django import forms
from django.apps import apps

from webapp.datasets.uploads import ACCEPT, extension_problem

# The mapping form's groups: one per format, with the canonical fields a file's columns can be mapped to and a
# hint saying which of them go together.
MAPPING_GROUPS = (
    ("Prompt and completion", ("prompt", "completion"),
     "Map both: the model learns to write the completion after the prompt."),
    ("Instruction (Alpaca)", ("instruction", "input", "output"),
     "Map instruction and output; input is optional extra context."),
    ("Text or classification", ("text", "label"),
     "Text alone trains a language model on it; text with a label trains a classifier."),
    ("Chat", ("messages", "conversations"),
     "Map one column holding the conversation as a JSON list: messages (role, content) or ShareGPT "
     "conversations (from, value)."),
)
MAPPABLE_FIELDS = tuple(name for _, names, _ in MAPPING_GROUPS for name in names)
MAX_LENGTH_CHOICES = (128, 256, 512, 1024, 2048, 4096)


def mapping_problem(mapping: dict) -> tuple[str, str] | None:
    """What is wrong with a column mapping {canonical field: column}, as (field at fault, message), or None.
    The mapping form and the API both ask this, so both refuse the same mappings."""
    unknown = sorted(set(mapping) - set(MAPPABLE_FIELDS))
    if unknown:
        return unknown[0], f"unknown field {unknown[0]!r}; map to {', '.join(MAPPABLE_FIELDS)}"
    used = list(mapping.values())
    twice = next((column for column in used if used.count(column) > 1), None)
    if twice is not None:
        fields = [name for name, column in mapping.items() if column == twice]
        return fields[-1], f"column {twice!r} is mapped to more than one field ({', '.join(fields)})"
    return None


class UploadForm(forms.Form):
    name = forms.CharField(max_length=200, required=False,
                           help_text="Shown in lists. Leave empty to use the file's name.")
    file = forms.FileField(label="Training file", widget=forms.ClearableFileInput(attrs={"accept": ACCEPT}),
                           help_text="JSONL, JSON array or CSV in UTF-8, optionally gzip-compressed.")
    eval_file = forms.FileField(label="Evaluation file (optional)", required=False,
                                widget=forms.ClearableFileInput(attrs={"accept": ACCEPT}),
                                help_text="Held-out rows in the same format. Without one, jobs split off a part.")

    def clean_file(self):
        return _accepted(self.cleaned_data["file"])

    def clean_eval_file(self):
        return _accepted(self.cleaned_data.get("eval_file"))


def _accepted(uploaded):
    if uploaded:
        problem = extension_problem(uploaded.name)
        if problem:
            raise forms.ValidationError(problem)
    return uploaded


def ready_base_models():
    """Catalog models whose tokenizer can measure a dataset (ready ones)."""
    BaseModel = apps.get_model("catalog", "BaseModel")
    return BaseModel.objects.filter(status=BaseModel.Status.READY)


class AnalysisForm(forms.Form):
    analysis_model = forms.ModelChoiceField(queryset=None, required=False, label="Count tokens with",
                                            empty_label="An estimate (UTF-8 bytes / 4), no tokenizer")
    max_length = forms.TypedChoiceField(choices=[(n, f"{n} tokens") for n in MAX_LENGTH_CHOICES], coerce=int,
                                        label="Max length", help_text="Rows longer than this are cut in training.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["analysis_model"].queryset = ready_base_models()


class ColumnMappingForm(forms.Form):
    """One select per canonical field, offering the file's own columns."""

    def __init__(self, columns: list[str], *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.columns = columns
        choices = [("", "—")] + [(c, c) for c in columns]
        for name in MAPPABLE_FIELDS:
            self.fields[name] = forms.ChoiceField(choices=choices, required=False, label=name)

    def groups(self) -> list[dict]:
        """The fields grouped by format, in MAPPING_GROUPS order: [{title, hint, fields}]."""
        return [{"title": title, "hint": hint, "fields": [self[name] for name in names]}
                for title, names, hint in MAPPING_GROUPS]

    def clean(self):
        mapping = {name: column for name, column in self.cleaned_data.items() if column}
        problem = mapping_problem(mapping)
        if problem:
            raise forms.ValidationError(problem[1])
        self.mapping = mapping
        return self.cleaned_data

    @classmethod
    def initial_for(cls, mapping: dict) -> dict:
        return {name: column for name, column in mapping.items() if name in MAPPABLE_FIELDS}
