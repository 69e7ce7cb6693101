"""The config: its schema and domains, the search path of config folders, composition and its errors."""
