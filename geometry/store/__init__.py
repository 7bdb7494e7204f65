"""Where do solutions and texts live? Texts, the run store, its part files and checkpoints, and
the texts' H_LM scores. No fitting here.
"""
