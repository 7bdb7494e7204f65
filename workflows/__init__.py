"""Which sequences turn a question into a finished run? The pipeline (the public API), the
studies and the demo, and sweeps with their execution backends.
"""
