"""The base layer: config schema, artifact store, models, datasets and generation engines.

Nothing here imports reward/, valuefn/ or any higher layer.
"""
