"""Same seed, same numbers: two shortened runs of a script return identical results.

Each script is shortened through its module-level constants (the same knobs a learner would
turn), and main() is called twice in an empty working directory. The two results must be
equal to the last digit, must contain every key the spec's criteria name, and the run must
leave the working directory empty.

The same shortened runs check a claim the Value scripts make: they switch Python's cycle
collector off because their graphs hold no reference cycles, so nothing is left for it to free.
"""
import gc

import pytest

from support import ROOT, implemented_specs, load_script

# Settings that make each script's main() finish in a second or two.
QUICK_SETTINGS = {
    "microtokenizer": {"NUM_MERGES": 20},
    "microembedding": {"NUM_STEPS": 20, "BATCH_SIZE": 16, "NUM_BUCKETS": 512, "EMBED_DIM": 8,
                       "NUM_EVAL_PAIRS": 50, "RETRIEVAL_POOL": 300, "NUM_QUERIES": 20},
    "microgpt": {"NUM_STEPS": 5, "NUM_SAMPLES": 3, "HELDOUT_NAMES": 20, "FUSION_DEMO_NAMES": 1},
    "microattention": {"SEQ_LEN": 6, "SPREAD_SWEEP": (0.2,)},
    "microflash": {"CHECK_LENGTHS": (20, 13), "CHECK_BLOCKS": (8, 5), "MEMORY_LENGTHS": (8, 16),
                   "BLOCK_SIZE": 4, "SWEEP_BLOCKS": (4,), "TRACE_ROW": 5},
    "microkv": {"NUM_STEPS": 3, "GROWTH_LENGTHS": (4, 8), "NUM_SAMPLES": 1, "NUM_REQUESTS": 3},
    "microvae": {"NUM_STEPS": 20, "NUM_TRAIN": 100, "NUM_HELD_OUT": 40, "NUM_PRIOR_SAMPLES": 40,
                 "NUM_INTERP_PAIRS": 3},
    "microrag": {"NUM_STEPS": 5, "NUM_CITIES": 20, "HIDDEN": 8},
    "microquant": {"NUM_STEPS": 3, "EVAL_NAMES": 8, "CALIB_NAMES": 8, "NUM_SAMPLES": 1},
    "microbeam": {"NUM_STEPS": 2, "NUM_HELDOUT": 10, "NUM_SAMPLES": 4, "NUM_SPEC_NAMES": 4,
                  "NUM_TV_SAMPLES": 200},
    "micrornn": {"NUM_STEPS": 3, "NUM_EVAL_WINDOWS": 3, "NUM_PROBE_WINDOWS": 2, "NUM_SAMPLES": 3},
    "micromoe": {"NUM_STEPS": 5, "BATCH_SIZE": 8, "EVAL_NAMES": 20, "SAMPLES": 1},
    "micropeft": {"NUM_STEPS": 3, "ADAPT_STEPS": 2, "HELDOUT_NAMES": 12, "CHECK_NAMES": 2},
    "microqlora": {"NUM_STEPS": 3, "ADAPT_STEPS": 3, "EVAL_NAMES": 10, "NUM_SAMPLES": 1},
    "microbatchnorm": {"NUM_STEPS": 3, "HELDOUT_EXAMPLES": 50, "STATS_EXAMPLES": 64,
                       "NUM_SAMPLES": 1},
    "microdiffusion": {"NUM_DATA": 100, "NUM_REFERENCE": 100, "NUM_STEPS": 20, "BATCH_SIZE": 8,
                       "NUM_SAMPLES": 20, "NUM_UNTRAINED_SAMPLES": 10, "LOG_EVERY": 10},
    "microreinforce": {"PRETRAIN_STEPS": 20, "NUM_STEPS": 2, "BATCH_SIZE": 4,
                       "VARIANCE_BATCHES": 3, "EVAL_SAMPLES": 20, "HELDOUT_NAMES": 20},
    "microdropout": {"NUM_STEPS": 6, "EVAL_EVERY": 2, "BATCH_SIZE": 8, "TRAIN_NAMES": 30,
                     "VALID_NAMES": 20, "HELDOUT_NAMES": 50},
    "microlora": {"NUM_STEPS": 3, "ADAPT_STEPS": 2, "HELDOUT_NAMES": 12, "MERGE_CHECK_NAMES": 2,
                  "NUM_SAMPLES": 2, "SWEEP_RANKS": (1, 2)},
    "microppo": {"PRETRAIN_STEPS": 20, "RM_PAIRS": 100, "HELDOUT_PAIRS": 20, "RM_EPOCHS": 1,
                 "NUM_STEPS": 2, "BATCH_SIZE": 2, "PPO_EPOCHS": 2, "CLIP_DEMO_EPOCHS": 2, "KL_WINDOW": 1,
                 "NUM_EVAL_SAMPLES": 10, "LOG_EVERY": 1},
    "microdpo": {"NUM_STEPS": 3, "DPO_STEPS": 2, "DPO_BATCH": 2, "HELDOUT_PAIRS": 4,
                 "KL_SAMPLES": 4, "KL_CHECKPOINTS": 2, "EVAL_NAMES": 5},
    "microgrpo": {"PRETRAIN_STEPS": 5, "NUM_STEPS": 2, "BLOCK_STEPS": 1, "EVAL_PER_LETTER": 1},
    "microreward": {"NUM_PAIRS": 20, "HELDOUT_PAIRS": 20, "NUM_EPOCHS": 1, "POOL_SIZE": 400,
                    "BON_NS": (1, 2, 4), "AUDIT_GROUPS": 4},
    "microdistill": {"TEACHER_STEPS": 4, "STUDENT_STEPS": 2, "STUDENT_NAMES": 5,
                     "HELDOUT_NAMES": 10, "TEMPERATURE_SWEEP": (4.0,)},
    "microoptim": {"NUM_STEPS": 20, "BATCH_SIZE": 8, "HELDOUT_NAMES": 30, "SMOOTH": 5,
                   "STEP_DECAY_EVERY": 8, "WARMUP_STEPS": 4, "BIAS_DEMO_STEPS": 10},
    "microsft": {"PRETRAIN_STEPS": 3, "SFT_STEPS": 3, "EVAL_NAMES": 3, "NUM_SHOWN": 1},
    "micropreference": {"NUM_STEPS": 3, "PREF_STEPS": 2, "PREF_BATCH": 2, "HELDOUT_PAIRS": 4,
                        "KL_SAMPLES": 4, "LOG_EVERY": 1},
    "microcheckpoint": {"DEPTH": 16, "BATCH": 2, "NUM_STEPS": 2, "FD_PARAMS": 4, "LOG_EVERY": 1},
    "microparallel": {"NUM_STEPS": 2, "FD_SAMPLES": 3},
    "microvectorsearch": {"NUM_DATABASE": 200, "NUM_QUERIES": 5, "KMEANS_ITERS": 2, "NLIST": 8,
                          "PQ_CHECK_QUERIES": 2, "RERANK_SHORTLIST": (20,),
                          "HNSW_EF_SWEEP": (10,), "HNSW_EF_CRITERION": 10},
    "microprune": {"NUM_STEPS": 3, "FINETUNE_STEPS": 2, "EVAL_NAMES": 10, "RANDOM_MASKS": 1},
    "microssm": {"NUM_STEPS": 3, "BATCH": 2, "EVAL_EXAMPLES": 10, "LOG_EVERY": 1},
    "micropaged": {"NUM_STEPS": 2, "ADAPTER_STEPS": 2, "NUM_REQUESTS": 10},
    "microlstm": {"NUM_STEPS": 2, "BATCH_SIZE": 2, "EVAL_EXAMPLES": 5, "NUM_PROBE": 3,
                  "MAX_DELAY": 5, "EVAL_DELAYS": (2, 5), "LOG_EVERY": 1},
    "microgan": {"NUM_DATA": 100, "NUM_REFERENCE": 100, "NUM_STEPS": 4, "BATCH_SIZE": 8,
                 "D_WARMUP_STEPS": 3, "NUM_GRAD_NOISE": 16, "NUM_SAMPLES": 30, "LOG_EVERY": 2},
    "micropositions": {"NUM_STEPS": 3, "MARKER_STEPS": 3, "EVAL_STRINGS": 5, "LONG_STRINGS": 3,
                       "LOG_EVERY": 1},
    "microconv": {"NUM_TRAIN": 20, "NUM_TEST": 10, "NUM_EPOCHS": 1, "GRAD_CHECK_EXAMPLES": 1},
    "microresnet": {"NUM_TRAIN": 20, "NUM_TEST": 10, "DEPTHS": (1, 2), "NUM_STEPS": 2,
                    "GRAD_BATCH": 2, "LOG_EVERY": 1},
    "microvit": {"TRAIN_SIZES": (10, 20), "NUM_TEST": 10, "NUM_STEPS": 2, "WIDTH": 4,
                 "NUM_HEADS": 2, "MLP_HIDDEN": 4, "GRAD_CHECK_EXAMPLES": 1, "NUM_MAPS": 1,
                 "LOG_EVERY": 1},
    "microcot": {"NUM_STEPS": 4, "EVAL_PER_LENGTH": 2, "PROBE_SUMS": 3, "EVAL_EVERY": 2,
                 "GRAD_CHECK_PARAMS": 3, "LOG_EVERY": 2},
    "microbert": {"NUM_STEPS": 3, "EVAL_NAMES": 10, "PROBE_NAMES": 20, "PROBE_STEPS": 5,
                  "GRAD_CHECK_PARAMS": 1, "LOG_EVERY": 1},
}


def shortened(spec, monkeypatch):
    assert spec.name in QUICK_SETTINGS, f"add quick settings for {spec.name}"
    module = load_script(spec.path)
    for constant, value in QUICK_SETTINGS[spec.name].items():
        assert hasattr(module, constant), f"{spec.name} has no constant {constant}"
        monkeypatch.setattr(module, constant, value)
    return module


@pytest.mark.parametrize("spec", implemented_specs(), ids=lambda s: s.name)
def test_two_runs_give_identical_results(spec, tmp_path, monkeypatch, capsys):
    module = shortened(spec, monkeypatch)
    monkeypatch.chdir(tmp_path)

    first = module.main()
    second = module.main()
    capsys.readouterr()

    assert first == second
    named = {c.key for c in spec.checks} | {c.target for c in spec.checks if isinstance(c.target, str)}
    assert named <= set(first), f"main() does not return {sorted(named - set(first))}"
    assert list(tmp_path.iterdir()) == []


COLLECTOR_OFF = [s for s in implemented_specs() if "gc.disable()" in (ROOT / s.path).read_text()]


@pytest.mark.parametrize("spec", COLLECTOR_OFF, ids=lambda s: s.name)
def test_with_the_cycle_collector_off_a_run_leaves_no_cycles(spec, tmp_path, monkeypatch,
                                                               capsys):
    # Every graph node the run built and dropped must already be freed by reference counting.
    # A full collection afterwards counts what was not: a Value graph with a cycle in it
    # would leave thousands of nodes behind per training step.
    module = shortened(spec, monkeypatch)
    monkeypatch.chdir(tmp_path)
    gc.collect()
    module.main()
    capsys.readouterr()
    assert not gc.isenabled(), "main() is expected to switch the collector off"
    assert gc.collect() < 100
