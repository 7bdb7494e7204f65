"""Where does a search start? Learned starts: encoders text -> proto-tokens (ridge, mlp,
end-to-end), a universal m, a frozen m read from a run or file, and the names of starts.
"""
