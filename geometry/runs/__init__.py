"""How does a command become a run store full of solutions? `fit` opens, resumes and fills a
run (the sequence every fitting command uses); `capacity` climbs a grid of prefix lengths.
"""
