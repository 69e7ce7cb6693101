"""A trained model outside training: rebuilt from its checkpoint alone (inference.py), and exported
with its preprocessing inside (deploy.py)."""
