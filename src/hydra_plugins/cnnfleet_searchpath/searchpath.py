"""A team's config folders (CNNFLEET_CONFIG_PATH, ':'-separated) join every cnnfleet composition.

Hydra applies search path plugins to its app and to its compose API alike, so the options these
folders add to a group (model, data, experiment, cluster, launcher, hparams_search, ...) are found
by the command line's checks and by the run itself. Other Hydra apps are left alone: the folders
are added only where the primary config is cnnfleet's own tree.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class CnnfleetSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from cnnfleet.config.search_path import conf_dir, shared_folders

        ours = f"file://{conf_dir()}"
        if not any(element.path in (ours, conf_dir()) for element in search_path.get_path()):
            return
        for folder in shared_folders():
            search_path.append(provider="cnnfleet-config-path", path=f"file://{folder}")
