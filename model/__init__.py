"""margin-contagion: the simulation core.

Python API::

    from model import ContagionModel, load_config
    m = ContagionModel(load_config("experiments/configs/baseline.toml", overrides={"steps": 100}))
    m.run()
    g = m.contagion_graph
    m.write_results("results/baseline")
"""

from model.config import Config, load_config
from model.errors import ConfigError, UsageError
from model.model import ContagionModel

__all__ = ["Config", "ConfigError", "ContagionModel", "UsageError", "load_config"]
