"""The base-model catalog: built-in demo models and models an admin adds, with their inspected layer shapes."""
