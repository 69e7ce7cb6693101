"""Data sets as Lightning DataModules, one module per data set, built from conf/data/."""
