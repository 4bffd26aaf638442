"""fairseq_switch.evaluation and reports/generations.py (scripts/score_generations.py): metrics on
hand-checked strings, SentencePiece detokenization, parsing fairseq-generate output, the CLI."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_switch import evaluation as ev
from fairseq_switch.lab.reports import generations

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "score_generations.py"

# fairseq-generate stdout (fairseq_cli/generate.py) for 3 examples, raw SentencePiece pieces (no
# --post-process), --nbest 2: logging and the final BLEU line go to stdout too; ids come out in batch
# order (sorted by length), not by id; each hypothesis is printed as H-, D- (= H- without --bpe), P-.
SAMPLE = """\
2024-05-02 10:11:12 | INFO | fairseq_cli.generate | loading model(s) from checkpoints/ckpt.pt
2024-05-02 10:11:13 | INFO | fairseq.data.data_utils | loaded 3 examples from: data-bin/x/test.src-tgt.src
S-2\t▁class ify : ▁a ▁fine ▁film
T-2\t▁positive
H-2\t-0.10821593552827835\t▁positive
D-2\t-0.10821593552827835\t▁positive
P-2\t-0.1821 -0.0343
H-2\t-1.6780765056610107\t▁negative
D-2\t-1.6780765056610107\t▁negative
P-2\t-3.1201 -0.2360
S-0\t▁summarize : ▁The ▁cat ▁lay ▁on ▁the ▁mat ▁all ▁day .
T-0\t▁The ▁cat ▁lay ▁on ▁the ▁mat .
H-0\t-0.4150375127792358\t▁the ▁cat ▁sat ▁on ▁the ▁mat
D-0\t-0.4150375127792358\t▁the ▁cat ▁sat ▁on ▁the ▁mat
P-0\t-0.5012 -0.3003 -0.7741 -0.2200 -0.1019 -0.6120 -0.1933
H-0\t-0.6309297680854797\t▁a ▁cat ▁sat
D-0\t-0.6309297680854797\t▁a ▁cat ▁sat
P-0\t-0.9012 -0.3003 -0.7741 -0.5480
S-1\t▁summarize : ▁cats ▁running ▁in ▁the ▁yard
T-1\t▁cats ▁running
H-1\t-0.2630344033241272\t▁cat ▁run s
D-1\t-0.2630344033241272\t▁cat ▁run s
P-1\t-0.3111 -0.2190 -0.2590 -0.2630
H-1\t-0.9\t▁dog s
D-1\t-0.9\t▁dog s
P-1\t-1.5000 -0.3000 -0.9000
2024-05-02 10:11:14 | INFO | fairseq_cli.generate | NOTE: hypothesis and token scores are output in base 2
2024-05-02 10:11:14 | INFO | fairseq_cli.generate | Translated 3 sentences (14 tokens) in 0.1s (30.00 sentences/s, 140.00 tokens/s)
Generate test with beam=2: BLEU4 = 31.95, 66.7/45.5/37.5/33.3 (BP=0.846 ratio=0.857 syslen=12 hyplen=14)
"""  # noqa: E501 (fairseq-generate's log lines, verbatim)


# ----------------------------------------------------------------------------- metrics


def test_rouge_hand_checked():
    # hyp "the cat sat on the mat" vs ref "the cat lay on the mat", 6 tokens each
    # unigrams: clipped overlap the×2, cat, on, mat = 5 -> P = R = F = 5/6
    # bigrams (5 each): shared "the cat", "on the", "the mat" = 3 -> P = R = F = 3/5
    # LCS "the cat on the mat" = 5 -> 5/6
    r = ev.rouge_scores(["the cat sat on the mat"], ["the cat lay on the mat"])
    assert r["rouge1"] == pytest.approx(500 / 6)
    assert r["rouge2"] == pytest.approx(60.0)
    assert r["rougeL"] == pytest.approx(500 / 6)
    # hyp "the cat" vs the 6-token ref: P = 2/2, R = 2/6, F = 2PR/(P+R) = 1/2
    r = ev.rouge_scores(["the cat"], ["the cat sat on the mat"])
    assert (r["rouge1_precision"], r["rouge1_recall"], r["rouge1"]) == pytest.approx((100.0, 100 / 3, 50.0))


def test_rouge_stems_and_averages_over_examples():
    # Porter stemming (words over 3 chars): cats -> cat, running -> run, runs -> run, so both
    # unigrams and the bigram "cat run" match; without stemming nothing would
    r = ev.rouge_scores(["cat runs"], ["cats running"])
    assert (r["rouge1"], r["rouge2"], r["rougeL"]) == pytest.approx((100.0, 100.0, 100.0))
    # an empty hypothesis scores 0, and counts in the mean: (5/6 + 0) / 2
    r = ev.rouge_scores(["the cat sat on the mat", ""], ["the cat lay on the mat", "a reference"])
    assert r["rouge1"] == pytest.approx(250 / 6)
    assert ev.rouge_scores([""], ["a reference"])["rouge2"] == 0.0


def test_normalize_answer_is_squad_v1_1():
    assert ev.normalize_answer("  The  Cat's   hat!") == "cats hat"
    assert ev.normalize_answer("An apple, a day") == "apple day"
    # articles only as whole words
    assert ev.normalize_answer("Theater anthem") == "theater anthem"


def test_exact_match_and_accuracy():
    hyps = ["The cat!", "an apple", "Paris, France", "cat"]
    refs = ["cat", "Apple", "paris france", "cats"]
    assert ev.exact_match(hyps, refs) == pytest.approx(75.0)
    # accuracy: only outer whitespace is forgiven; case counts
    assert ev.accuracy([" positive ", "negative", "Positive"], ["positive", "negative\n", "positive"]) == pytest.approx(
        200 / 3
    )


def test_bleu():
    s = "the quick brown fox jumps over the lazy dog"
    assert ev.bleu([s, s], [s, s]) == pytest.approx(100.0)
    assert ev.bleu(["a b c d e"], ["v w x y z"]) == pytest.approx(0.0)
    assert 0.0 < ev.bleu(["the quick brown fox jumps over a lazy dog"], [s]) < 100.0


def test_metrics_reject_mismatched_or_empty_input():
    for fn in (ev.rouge_scores, ev.exact_match, ev.accuracy, ev.bleu):
        with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
            fn(["a", "b"], ["a"])
        with pytest.raises(ValueError, match="no examples"):
            fn([], [])
    with pytest.raises(ValueError, match="lists of strings"):
        ev.accuracy("abc", "abc")
    with pytest.raises(ValueError, match="unknown metric"):
        ev.compute_metrics(["a"], ["a"], ["rouge3"])


# ----------------------------------------------------------------------------- detokenization


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    """A tiny unigram model trained like the project's vocabularies (fairseq specials, sentinels)."""
    from fairseq_switch.data.vocab import train_spm

    lines = (ROOT / "data" / "moby_dick" / "moby_dick.txt").read_text(encoding="utf-8").splitlines()
    sentences = [line for line in lines[200:500] if line.strip()]
    prefix = tmp_path_factory.mktemp("spm") / "spm"
    train_spm(sentences, prefix, vocab_size=300, seed=1, user_defined_symbols=["<extra_id_0>", "<extra_id_1>"])
    return str(prefix) + ".model"


ROUND_TRIP = [
    "Call me Ishmael.",
    '"Grub, ho!" now cried the landlord, flinging open a door.',
    "It's a land of oil; true enough: but not like Canaan? (No.)",
    "  Leading and   trailing spaces,  and runs of them  ",
    "Fill the span: <extra_id_0> whales <extra_id_1>.",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_detokenize_round_trip(spm_model, text):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=spm_model)
    line = " ".join(sp.encode(text, out_type=str))  # what fairseq prints for these ids
    assert "▁" in line
    expected = " ".join(text.split())  # SentencePiece collapses and strips whitespace
    assert ev.detokenize(line) == expected
    assert ev.detokenize(line, spm_model) == expected


def test_detokenize_leaves_text_alone_and_checks_the_model(spm_model):
    assert ev.detokenize("▁The ▁cat s ▁sat .") == "The cats sat."
    assert ev.detokenize("The cats  sat.") == "The cats  sat."  # no "▁": already post-processed
    assert ev.detokenize("") == ""
    assert ev.detokenize("cat s") == "cat s" and ev.detokenize("cat s", pieces=True) == "cats"
    with pytest.raises(ValueError, match="not in the SentencePiece model"):
        ev.detokenize("▁the ▁zzzqqq", spm_model)
    with pytest.raises(ValueError, match="model not found"):
        ev.detokenize("▁the", "/nonexistent/spm.model")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        ev.load_spm(ROOT / "data" / "moby_dick" / "README.md")


def test_detokenize_deletes_unk_in_pieces_and_in_text(spm_model):
    import sentencepiece as spm

    # fairseq prints <unk> in H- lines and "<<unk>>" in T- lines; --post-process glues it to its neighbours
    cases = [
        ("▁the <<unk>> ▁cat", "the cat"),
        ("▁the ▁ <unk> ▁cat", "the cat"),  # "▁" + an unknown character: no double space left
        ("▁caf <unk> s ▁au ▁lait", "cafs au lait"),  # inside a word: its other characters stay
        ("<unk> <<unk>>", ""),
        ("the<<unk>> cat", "the cat"),  # the same lines post-processed into text
        ("the <unk> cat", "the cat"),
        ("caf<unk>s au lait", "cafs au lait"),
    ]
    assert [ev.detokenize(line) for line, _ in cases] == [text for _, text in cases]
    sp = spm.SentencePieceProcessor(model_file=spm_model)
    pieces = lambda text: sp.encode(text, out_type=str)  # noqa: E731
    line = " ".join(["<<unk>>", *pieces("Call me"), "<unk>", *pieces("Ishmael."), "<unk>"])
    assert ev.detokenize(line, spm_model) == ev.detokenize(line) == "Call me Ishmael."  # never " ⁇ "


@pytest.fixture(scope="module")
def byte_spm_model(tmp_path_factory):
    """A unigram model with byte fallback: characters outside its training text become <0xNN> pieces."""
    import sentencepiece as spm

    lines = (ROOT / "data" / "moby_dick" / "moby_dick.txt").read_text(encoding="utf-8").splitlines()[200:260]
    prefix = tmp_path_factory.mktemp("spm_bytes") / "spm"
    spm.SentencePieceTrainer.train(sentence_iterator=iter(line for line in lines if line.strip()),
                                   model_prefix=str(prefix), vocab_size=360, byte_fallback=True,
                                   character_coverage=1.0, num_threads=1, minloglevel=2)
    return str(prefix) + ".model"


def test_detokenize_decodes_byte_fallback_pieces(byte_spm_model):
    import sentencepiece as spm

    text = "Café \u201cnaïve\u201d whale"
    line = " ".join(spm.SentencePieceProcessor(model_file=byte_spm_model).encode(text, out_type=str))
    assert "<0xC3> <0xA9>" in line  # é
    assert ev.detokenize(line, byte_spm_model) == ev.detokenize(line) == text
    post_processed = line.replace(" ", "").replace("▁", " ").strip()  # fairseq --post-process sentencepiece
    assert "Caf<0xC3><0xA9>" in post_processed and ev.detokenize(post_processed) == text
    # an invalid sequence: one U+FFFD per byte, with or without the model
    invalid = "▁a <0xE2> <0x80> ▁b"
    assert ev.detokenize(invalid, byte_spm_model) == ev.detokenize(invalid) == "a\ufffd\ufffd b"


# ----------------------------------------------------------------------------- fairseq-generate output


def test_read_generate_output_sample():
    examples = ev.read_generate_output(SAMPLE.splitlines(keepends=True))
    assert [e.id for e in examples] == [0, 1, 2]
    e0, e1, e2 = examples
    assert e0.source == "▁summarize : ▁The ▁cat ▁lay ▁on ▁the ▁mat ▁all ▁day ."
    assert e0.target == "▁The ▁cat ▁lay ▁on ▁the ▁mat ."
    # the first (best) of --nbest 2, not "▁a ▁cat ▁sat"
    assert (e0.hypothesis, e0.score) == ("▁the ▁cat ▁sat ▁on ▁the ▁mat", pytest.approx(-0.4150375127792358))
    assert e1.hypothesis == "▁cat ▁run s"
    assert (e2.target, e2.hypothesis) == ("▁positive", "▁positive")


def test_read_generate_output_prefers_d_lines():
    # --bpe sentencepiece: H- holds pieces, D- (and T-) the decoded text; an empty best hypothesis
    # may lose its trailing tab when the file was stripped
    lines = [
        "S-7\tsummarize: The cat lay down.",
        "T-7\tThe cat lay down.",
        "H-7\t-0.25\t▁The ▁cat ▁lay s",
        "D-7\t-0.25\tThe cat lays",
        "P-7\t-0.1 -0.2 -0.3 -0.4",
        "S-3\tsummarize: Nothing.",
        "T-3\tNothing.",
        "H-3\t-2.5",
        "D-3\t-2.5",
    ]
    examples = ev.read_generate_output(lines)
    assert [(e.id, e.hypothesis, e.score) for e in examples] == [(3, "", -2.5), (7, "The cat lays", -0.25)]
    # only H- lines (e.g. grep ^H): the H- text is used
    examples = ev.read_generate_output([ln for ln in lines if not ln.startswith("D-")])
    assert examples[1].hypothesis == "▁The ▁cat ▁lay s"


@pytest.mark.parametrize(
    "lines, message",
    [
        ([], "no hypotheses"),
        (["S-0\tsome source", "T-0\tsome target", "Generate test with beam=4: BLEU4 = 0.00"], "no hypotheses"),
        (["S-0\tsome source", "H-0\t-0.5\ta hyp", "D-0\t-0.5\ta hyp"], "no reference .*id 0.*fairseq-preprocess"),
        (["T-0\tt", "H-0\t-0.5\th", "T-1\tt"], "reference but no hypothesis, e.g. id 1"),
        (["T-0\tt", "H-0\t-0.5\th", "T-0\tt", "H-0\t-0.5\th"], "line 3: a second T-0 line"),
        (["T-0\tt", "H-0\tthe hypothesis without a score"], "line 2: H-0 has no score"),
    ],
)
def test_read_generate_output_errors(lines, message):
    with pytest.raises(ValueError, match=message):
        ev.read_generate_output(lines)


# ----------------------------------------------------------------------------- unknown tokens, degenerate outputs

# a reference and a hypothesis with unknown tokens, as fairseq-generate prints them (T- escapes <unk>)
UNK_SAMPLE = ["T-0\t▁the ▁cat ▁sat ▁on ▁the ▁ <<unk>> ▁mat", "H-0\t-0.3\t▁the ▁cat ▁sat <unk> ▁on ▁a ▁mat"]


def test_rouge_never_scores_unk_as_a_word():
    # with <unk> deleted: hyp "the cat sat on a mat" vs ref "the cat sat on the mat", 6 words each;
    # unigrams the, cat, sat, on, mat = 5/6; bigrams "the cat", "cat sat", "sat on" = 3/5; LCS 5/6.
    # Scoring the unk (as "unk" on both sides) would add a matching word: 6/7 and 4/6
    hand = {"rouge1": 500 / 6, "rouge2": 60.0, "rougeL": 500 / 6}
    assert ev.rouge_scores(["the cat sat on a mat"], ["the cat sat on the mat"]) == pytest.approx(
        {k + s: v for k, v in hand.items() for s in ("", "_precision", "_recall")})
    result = generations.score(UNK_SAMPLE, ["rouge"])
    assert {k: result[k] for k in hand} == pytest.approx(hand)


def test_distinct_and_repetitive_outputs():
    assert ev.distinct_outputs(["The cat", "The cat", "the cat", "The dog"]) == 75.0  # compared exactly
    outputs = [
        "▁The ▁US S S S S",  # "The USSSS": one piece 4 times in a row
        "▁the ▁the ▁the ▁the ▁end",  # a word 4 times
        "▁the ▁the ▁the ▁cat ▁the",  # 3 in a row is not enough
        "▁a ▁b ▁a ▁b ▁a ▁b ▁a ▁b",  # alternation is not a run
        "",
    ]
    assert ev.repetitive_outputs(outputs) == 40.0
    assert ev.repetitive_outputs(["<unk> <unk> <unk> <unk>"]) == 100.0
    for fn in (ev.distinct_outputs, ev.repetitive_outputs):
        with pytest.raises(ValueError, match="non-empty list"):
            fn([])


def test_cli_reports_degenerate_outputs(tmp_path, capsys):
    # --bpe sentencepiece: D- holds text, H- the generated pieces the repetition is counted on
    gen = tmp_path / "gen.out"
    gen.write_text(
        "T-0\tThe US wins.\nH-0\t-1.0\t▁The ▁US S S S S\nD-0\t-1.0\tThe USSSS\n"
        "T-1\tRain in Spain.\nH-1\t-1.0\t▁The ▁US S S S S\nD-1\t-1.0\tThe USSSS\n"
        "T-2\tThe US wins.\nH-2\t-1.0\t▁The ▁US ▁wins .\nD-2\t-1.0\tThe US wins.\n", encoding="utf-8")
    assert generations.main([str(gen), "--json", "--output", str(tmp_path / "s.json")]) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    assert (result["distinct"], result["repetitive"]) == pytest.approx((200 / 3, 200 / 3))
    # ROUGE scores the D- text: "The USSSS" shares "the" with "The US wins." (P 1/2, R 1/3, F 2/5)
    assert result["rouge1"] == pytest.approx((40 + 0 + 100) / 3)
    assert generations.main([str(gen)]) == 0
    table = capsys.readouterr().out
    assert "distinct    66.67  (2 different outputs of 3)" in table
    assert "repetitive  66.67  (2 of 3 repeat a token 4+ times in a row)" in table


# ----------------------------------------------------------------------------- CLI


def run_cli(*args, stdin=None):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def test_cli_json(tmp_path):
    gen = tmp_path / "gen.out"
    gen.write_text(SAMPLE, encoding="utf-8")
    out = tmp_path / "scores.json"
    proc = run_cli(str(gen), "--metrics", "rouge,em,acc,bleu", "--json", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    result = json.loads(out.read_text())
    # detokenized pairs: "the cat sat on the mat" / "The cat lay on the mat." (R1 5/6, R2 3/5),
    # "cat runs" / "cats running" (100 with stemming), "positive" / "positive" (100, but one word
    # has no bigram: ROUGE-2 0)
    assert result["examples"] == 3
    assert result["rouge1"] == pytest.approx((500 / 6 + 200) / 3)
    assert result["rouge2"] == pytest.approx((60 + 100 + 0) / 3)
    assert result["rougeL"] == pytest.approx((500 / 6 + 200) / 3)
    assert result["em"] == pytest.approx(100 / 3)  # only "positive"
    assert result["acc"] == pytest.approx(100 / 3)
    hyps = ["the cat sat on the mat", "cat runs", "positive"]
    refs = ["The cat lay on the mat.", "cats running", "positive"]
    assert result["bleu"] == pytest.approx(ev.bleu(hyps, refs))


def test_cli_spm_model(tmp_path, spm_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=spm_model)
    pieces = lambda text: " ".join(sp.encode(text, out_type=str))  # noqa: E731
    gen = tmp_path / "gen.out"
    gen.write_text(
        f"T-0\t{pieces('Call me Ishmael.')}\nH-0\t-0.1\t{pieces('Call me Ishmael.')}\n"
        f"T-1\t{pieces('The whale.')}\nH-1\t-0.2\t{pieces('the whale')}\n",
        encoding="utf-8",
    )
    proc = run_cli(str(gen), "--spm-model", spm_model, "--metrics", "em,acc", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"examples": 2, "em": 100.0, "acc": 50.0}


def test_cli_table_from_stdin():
    proc = run_cli("-", "--metrics", "acc", stdin=SAMPLE)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert rows == [["examples", "3"], ["acc", "33.33"]]


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "No such file"),
        ("just some text\nwithout generate lines\n", "no hypotheses"),
        ("S-0\tsrc\nH-0\t-0.1\thyp\n", "no reference"),
    ],
)
def test_cli_bad_input_exits_2(tmp_path, content, message):
    gen = tmp_path / "gen.out"
    if content is not None:
        gen.write_text(content, encoding="utf-8")
    proc = run_cli(str(gen))
    check_one_line_error(proc, message)


def test_cli_bad_spm_model_exits_2(tmp_path):
    gen = tmp_path / "gen.out"
    gen.write_text(SAMPLE, encoding="utf-8")
    proc = run_cli(str(gen), "--spm-model", str(ROOT / "data" / "moby_dick" / "README.md"))
    check_one_line_error(proc, "not a SentencePiece model")


def check_one_line_error(proc, message):
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
