"""fairseq's hub convention for this model: `from_pretrained(folder)` gives a GeneratorHubInterface.

    from fairseq_switch.models.switch_transformer import SwitchTransformerModel
    model = SwitchTransformerModel.from_pretrained("fs-switch-base-8")   # a convert_checkpoint.py to-fairseq folder
    model.sample(["summarize: ..."], beam=1)                             # -> ["..."]

The folder holds checkpoint.pt, the dictionaries (dict.input.txt, dict.target.txt) and spm.model, the T5
SentencePiece model that encodes the input and decodes the output (fairseq's `sentencepiece` bpe).
"""

import os
from typing import Any, Dict


class HubMixin:
    @classmethod
    def hub_models(cls) -> Dict[str, Any]:
        return {}  # nothing to download: convert a transformers folder (docs/conversion.md)

    @classmethod
    def from_pretrained(cls, model_name_or_path: str, checkpoint_file: str = "checkpoint.pt",
                        data_name_or_path: str = ".", **kwargs: Any) -> Any:
        """`data_name_or_path`: the folder with dict.input.txt and spm.model, relative to the checkpoint's
        when it starts with "." (e.g. a fine-tuning run's save dir with its data elsewhere); other keyword
        arguments override the checkpoint's options, as in fairseq's hub_utils.from_pretrained."""
        from ..plugin import register

        register()  # the checkpoint's task and criterion
        data = data_name_or_path
        if data.startswith("."):
            data = os.path.join(model_name_or_path, data)
        spm = os.path.join(data, "spm.model")
        if kwargs.setdefault("bpe", "sentencepiece") == "sentencepiece" and "sentencepiece_model" not in kwargs:
            if not os.path.isfile(spm):
                raise FileNotFoundError(f"{spm} does not exist: pass sentencepiece_model=<the T5 SentencePiece model>")
            kwargs["sentencepiece_model"] = spm
        return super().from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path,  # type: ignore[misc]
                                       **kwargs)
