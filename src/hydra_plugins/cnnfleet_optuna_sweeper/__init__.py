"""cnnfleet's Optuna sweeper for Hydra (the class lives here because Hydra only instantiates
sweepers from the `hydra_plugins` package; the search loop is in cnnfleet.sweeps.optuna_search)."""
