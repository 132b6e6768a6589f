"""Loss functions, free of configs and trainers: the JEPA prediction loss, the sparsity family, and the
contrastive losses of the CLIP and SigLIP baselines with their cross-rank gather (``contrastive.py``).
"""
