from setuptools import find_packages, setup

setup(
    name="fairseq_switch",
    version="0.1.0",
    description="Switch Transformers (Fedus, Zoph, Shazeer 2021) as a fairseq user-dir plugin",
    packages=find_packages(include=["fairseq_switch", "fairseq_switch.*"]),
    python_requires=">=3.10",
    # fairseq-fixed is installed with --no-deps by scripts/install.sh (it declares torchaudio).
    install_requires=[
        "torch>=2.11",  # scripts/install.sh pins 2.13.0 for CI; TORCH=system takes the machine's (>= 2.11)
        "fairscale==0.4.13",
        "hydra-core==1.3.2",
        "omegaconf==2.3.0",
        "sentencepiece",
        "sacrebleu",
        "rouge-score",
        "tensorboardX",
        "safetensors",  # reading and writing transformers' checkpoint folders (fairseq_switch.convert)
    ],
    entry_points={
        "console_scripts": [
            # fetch|prepare|report take a subcommand (see fairseq_switch/lab/cli.py); `python scripts/X.py` still works
            "fairseq-switch-fetch = fairseq_switch.lab.cli:fetch",
            "fairseq-switch-prepare = fairseq_switch.lab.cli:prepare",
            "fairseq-switch-report = fairseq_switch.lab.cli:report",
            "fairseq-switch-convert = fairseq_switch.convert.cli:main",
            "fairseq-switch-verify = fairseq_switch.checkpoints.verify:main",
            "fairseq-switch-reshard = fairseq_switch.reshard:main",
            "fairseq-switch-upcycle = fairseq_switch.convert.upcycle:main",
            "fairseq-switch-reference = fairseq_switch.lab.reference_transformers:main",
        ],
    },
)
