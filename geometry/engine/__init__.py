"""The engine: which text do proto-tokens decode to, and how are they found? Arrangements, the
shared decoder, recipes, the batched fitting loop and paths between solutions. It runs the model
and knows nothing of run directories, analyses or reports.
"""
