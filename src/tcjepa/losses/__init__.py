"""Loss functions, free of configs and trainers: the JEPA prediction loss and the sparsity family.

Contrastive losses (with their cross-rank gather) will live here too, beside what they share.
"""
