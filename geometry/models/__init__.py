"""Which frozen model is studied? Loading, aliases, GGUF conversion and tiny test models.
"""

DEFAULT_MODEL = "smollm2-135m"  # the model every command uses unless told otherwise
