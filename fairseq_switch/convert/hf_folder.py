"""Read a transformers model folder (config.json + weights + spiece.model) tensor by tensor.

Weights may be one `model.safetensors`, shards named by `model.safetensors.index.json`, one
`pytorch_model.bin` or shards named by `pytorch_model.bin.index.json` (the layouts
`PreTrainedModel.save_pretrained` writes, old and new). Nothing is read up front but headers:
safetensors files are opened with `safe_open` (tensors come back memory-mapped) and .bin files with
`torch.load(mmap=True, weights_only=True)`. `release()` drops every open file, so a converter that
builds one output file at a time holds only what that file needs.
"""

import json
import os
from typing import Dict, List, Optional, Tuple

import torch

MODEL_TYPES = ("t5", "switch_transformers")
WEIGHT_LAYOUTS = (  # (index file, single file), in the order transformers prefers them
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
)
DEFAULT_EXTRA_IDS = 100  # T5Tokenizer's default number of sentinels <extra_id_0..99>


class HFFolder:
    """A transformers T5 / SwitchTransformers folder. `get(name)` reads one tensor."""

    def __init__(self, folder: str):
        self.folder = folder
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder} is not a folder: give a transformers model folder (config.json, "
                                    f"model.safetensors or pytorch_model.bin, spiece.model)")
        cfg_path = os.path.join(folder, "config.json")
        if not os.path.isfile(cfg_path):
            raise ValueError(f"{folder} is not a transformers T5/Switch folder: it has no config.json")
        try:
            with open(cfg_path, encoding="utf-8") as f:
                self.config = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{cfg_path} is not valid JSON ({e})") from None
        mt = self.config.get("model_type")
        if mt not in MODEL_TYPES:
            raise ValueError(f"{cfg_path} has model_type {mt!r}; only T5 ('t5') and SwitchTransformers "
                             f"('switch_transformers') can be converted")
        self.model_type = mt
        self._where: Dict[str, str] = {}  # tensor name -> file (relative to the folder)
        self._open: Dict[str, object] = {}
        self.weight_files = self._index_weights()

    # -- weight files ------------------------------------------------------------------------
    def _index_weights(self) -> List[str]:
        for index, single in WEIGHT_LAYOUTS:
            ipath, spath = os.path.join(self.folder, index), os.path.join(self.folder, single)
            if os.path.isfile(ipath):
                try:
                    with open(ipath, encoding="utf-8") as f:
                        weight_map = json.load(f)["weight_map"]
                except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
                    raise ValueError(f"{ipath} is not a valid weight index (no weight_map: {e})") from None
                files = sorted(set(weight_map.values()))
                for fn in files:
                    if not os.path.isfile(os.path.join(self.folder, fn)):
                        raise FileNotFoundError(f"{ipath} names the shard {fn}, which is missing from {self.folder}")
                self._where = dict(weight_map)
                return files
            if os.path.isfile(spath):
                self._where = {name: single for name in self._names_in(single)}
                self.release()
                return [single]
        raise FileNotFoundError(
            f"{self.folder} has no weights: expected model.safetensors, model.safetensors.index.json (+ shards), "
            f"pytorch_model.bin or pytorch_model.bin.index.json (+ shards)")

    def _handle(self, fn: str):
        h = self._open.get(fn)
        if h is not None:
            return h
        path = os.path.join(self.folder, fn)
        try:
            if fn.endswith(".safetensors"):
                from safetensors import safe_open

                h = safe_open(path, framework="pt")
            else:
                if not os.path.isfile(path):
                    raise FileNotFoundError(path)
                h = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
                if not isinstance(h, dict):
                    raise ValueError("not a state dict")
        except FileNotFoundError:
            raise FileNotFoundError(f"weight file {path} is missing") from None
        except Exception as e:  # safetensors, zip and pickle errors alike
            raise ValueError(f"weight file {path} is corrupt or not a checkpoint ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        self._open[fn] = h
        return h

    def _names_in(self, fn: str) -> List[str]:
        h = self._handle(fn)
        return list(h.keys())

    def release(self) -> None:
        """Close every open weight file (memory-mapped pages go with them)."""
        self._open.clear()

    # -- tensors -----------------------------------------------------------------------------
    def names(self) -> List[str]:
        return list(self._where)

    def has(self, name: str) -> bool:
        return name in self._where

    def shape(self, name: str) -> Tuple[int, ...]:
        fn = self._file_of(name)
        h = self._handle(fn)
        if fn.endswith(".safetensors"):
            return tuple(h.get_slice(name).get_shape())
        return tuple(h[name].shape)

    def _file_of(self, name: str) -> str:
        fn = self._where.get(name)
        if fn is None:
            raise ValueError(f"tensor {name} is missing from the weights in {self.folder}")
        return fn

    def get(self, name: str) -> torch.Tensor:
        fn = self._file_of(name)
        h = self._handle(fn)
        try:
            t = h.get_tensor(name) if fn.endswith(".safetensors") else h[name]
        except KeyError:
            raise ValueError(f"tensor {name} is missing from {os.path.join(self.folder, fn)} (its index names "
                             f"that file)") from None
        except Exception as e:
            raise ValueError(f"weight file {os.path.join(self.folder, fn)} is corrupt: reading {name} failed "
                             f"({type(e).__name__}: {e})") from None
        return t

    # -- tokenizer ---------------------------------------------------------------------------
    def spm_path(self, given: Optional[str] = None) -> str:
        """The SentencePiece model: `given`, else the folder's spiece.model."""
        if given:
            if not os.path.isfile(given):
                raise FileNotFoundError(f"--spm-model {given} does not exist")
            return given
        path = os.path.join(self.folder, "spiece.model")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{self.folder} has no spiece.model (the T5 SentencePiece model): pass its path with "
                f"--spm-model (spm_model=...), e.g. the spiece.model of the tokenizer the model was trained with")
        return path

    def extra_ids(self) -> int:
        """Number of sentinels <extra_id_*> the tokenizer adds after the SentencePiece pieces."""
        path = os.path.join(self.folder, "tokenizer_config.json")
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    tc = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{path} is not valid JSON ({e})") from None
            if "extra_ids" in tc:
                n = tc["extra_ids"]
                if not isinstance(n, int) or n < 0:
                    raise ValueError(f"{path}: extra_ids must be a count >= 0, got {n!r}")
                return n
        return DEFAULT_EXTRA_IDS
