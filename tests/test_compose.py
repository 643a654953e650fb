"""The one door into Hydra (hf_transfer.compose): our search path, for our sessions only, and
sweeps expanded as Hydra's own basic sweeper expands them."""

from __future__ import annotations

import pytest
from conftest import TEST_RECIPES

from hf_transfer.compose import hydra_session, split_sweeps
from hf_transfer.errors import UserError


def test_the_search_path_plugin_adds_recipes_to_our_sessions_only():
    """Hydra calls hydra_plugins/hf_transfer_search_path.py for every app in the environment:
    another app composing from a module of its own must see no recipes of ours."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    with hydra_session() as loader:
        assert {"bert_sentiment", "gpt_sentiment"} <= set(loader.get_group_options("recipe"))
        assert "tiny" not in loader.get_group_options("recipe")
    with hydra_session(str(TEST_RECIPES)) as loader:
        assert "tiny" in loader.get_group_options("recipe")
        providers = [entry.provider for entry in loader.get_search_path().get_path()]
        # --config-dir after ours, where @hydra.main puts it: a shipped recipe keeps its name
        assert providers == ["hydra", "main", "hf_transfer", "command-line", "schema"]
    with initialize_config_module("hf_transfer.conf", version_base=None):
        other = GlobalHydra.instance().config_loader()
        assert other.get_group_options("recipe") == []
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    "overrides",
    [
        ["a=1,2", "b=x"],
        ["++a=1,2", "b=x,y", "+d=range(0,3)"],
        ["a=1", "b=x,y", "a=3"],  # a key given twice keeps its last value, in its first place
        ["a='x,y'", "b=choice(p,q)"],
    ],
)
def test_a_sweep_expands_as_hydras_basic_sweeper_expands_it(overrides):
    # Hydra's own sweeper is the oracle here; hf_transfer no longer runs it.
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)
    assert split_sweeps(overrides) == [job for batch in batches for job in batch]


def test_an_interval_sweep_is_refused_with_the_override_named():
    with pytest.raises(UserError, match=r"'lr=interval\(0,1\)': -m runs choices"):
        split_sweeps(["a=1,2", "lr=interval(0,1)"])


def test_a_removal_in_a_sweep_stays_a_removal_whatever_the_value():
    # (Hydra's basic sweeper writes ~c=null, which removes c only where it is null)
    assert split_sweeps(["~c", "a=1,2"]) == [["~c", "a=1"], ["~c", "a=2"]]
