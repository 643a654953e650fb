"""hf-transfer's recipes (and a user's --config-dir) on Hydra's config search path.

Hydra finds this module by scanning the `hydra_plugins` namespace, as it finds any plugin, and
calls it whenever it builds a search path, for every Hydra app in the environment: it changes
nothing unless hf-transfer opened the session (hf_transfer.compose.hydra_session).
"""

from __future__ import annotations

import sys

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class HfTransferSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        compose = sys.modules.get("hf_transfer.compose")  # not imported here: other apps never load hf_transfer
        extend = getattr(compose, "extend_search_path", None)  # None: not loaded, or a version without it
        if extend is not None:
            extend(search_path)
