"""factgpt: how small transformers learn facts from text and give them back.

A reproduction of "Pretrained Transformer models and knowledge access" (CS224N assignment 5,
a fork of minGPT), kept faithful to the reference and then made fast.
"""

from factgpt.config import GPTConfig, TrainConfig
from factgpt.errors import FactgptError

__all__ = ["GPTConfig", "TrainConfig", "FactgptError"]
__version__ = "0.1.0"
