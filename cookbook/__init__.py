"""InternVL with vLLM on Ascend NPUs: recipes, a tiny test checkpoint and notebook tooling.

Importing ``cookbook`` loads neither torch nor vLLM; the functions that need them import
them when called, so installing the cookbook into the vllm-ascend container changes
nothing there.
"""

__version__ = "0.1.0"
