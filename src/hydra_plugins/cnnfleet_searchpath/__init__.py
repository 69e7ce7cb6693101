"""CNNFLEET_CONFIG_PATH on Hydra's search path (Hydra discovers SearchPathPlugins in `hydra_plugins`)."""
