"""Chain-of-thought verdicts against the question's graph."""

from latent.eval import chains

QUESTION = (
    "Every wumpus is a yumpus. Tom is a wumpus. Every yumpus is a lempus. Tom is a gorpus. "
    "Every gorpus is a scrompus. Is Tom a lempus or scrompus?"
)


def test_valid_chain_reaching_the_target():
    record = chains.analyse(QUESTION, "Tom is a wumpus.\nEvery wumpus is a yumpus.\nEvery yumpus is a lempus.\n### Tom is a lempus.")
    assert record["steps"] == ["valid"] * 3 and record["all_valid"] and record["ends_at"] == "lempus"


def test_each_kind_of_error_is_named():
    record = chains.analyse(QUESTION, "Tom is a wumpus.\nEvery wumpus is a scrompus.\nEvery scrompus is a gorpus.\n"
                                      "Every yumpus is a lempus.\nblah\n### Tom is a scrompus.")
    assert record["steps"] == ["valid", "hallucinated", "reversed", "broken", "unparsed"]
    assert record["first_error"] == "hallucinated" and not record["all_valid"]


def test_skipping_steps_of_a_true_path_is_a_shortcut():
    # wumpus -> yumpus -> lempus is stated; "Every wumpus is a lempus" skips yumpus
    record = chains.analyse(QUESTION, "Tom is a wumpus.\nEvery wumpus is a lempus.\n### Tom is a lempus.")
    assert record["steps"] == ["valid", "shortcut"] and record["ends_at"] == "lempus"
    assert chains.analyse(QUESTION, "Tom is a yumpus.\n### Tom is a lempus.")["steps"] == ["shortcut"]
    assert chains.reachable(chains.question_edges(QUESTION), "Tom") == {"wumpus", "yumpus", "lempus", "gorpus", "scrompus"}


def test_summary_shares_and_non_graph_questions():
    valid = chains.analyse(QUESTION, "Tom is a gorpus.\nEvery gorpus is a scrompus.\n### Tom is a scrompus.")
    wrong = chains.analyse(QUESTION, "Tom is a wumpus.\nEvery wumpus is a scrompus.\n### Tom is a scrompus.")
    assert chains.analyse("What is 12 * 34?", "408") is None
    summary = chains.summarize([valid, wrong, None], [False, False, True])
    assert summary["n"] == 2 and summary["valid_chain_share"] == 0.5
    assert summary["step_shares"] == {"hallucinated": 0.25, "valid": 0.75}
    assert summary["first_error_shares"] == {"hallucinated": 0.5, "none": 0.5}
    assert summary["accuracy_of_valid_chains"] == 0.0  # a valid chain down the wrong branch


def test_no_path_guess_reads_the_other_persons_statement():
    # Sam directly is a scrompus, so the guess takes scrompus for the distractor.
    attached = "Tom is a wumpus. Every wumpus is a lempus. Sam is a scrompus. Is Tom a scrompus or lempus?"
    assert chains.no_path_guess(attached) == "lempus"
    assert chains.no_path_guess(QUESTION) is None  # no other person: undecided
    both = "Tom is a wumpus. Every wumpus is a lempus. Sam is a scrompus. Max is a lempus. Is Tom a scrompus or lempus?"
    assert chains.no_path_guess(both) is None
    right = chains.analyse(attached, "### Tom is a lempus.", "Tom is a lempus.")
    fooled = chains.analyse(attached.replace("Is Tom a scrompus or lempus?", "Is Tom a lempus or scrompus?"),
                            "", "Tom is a scrompus.")
    undecided = chains.analyse(QUESTION, "", "Tom is a lempus.")
    assert (right["no_path_guess_score"], fooled["no_path_guess_score"], undecided["no_path_guess_score"]) == (1.0, 0.0, 0.5)
    summary = chains.summarize([right, fooled, undecided], [True, False, False])
    assert summary["no_path_baseline_accuracy"] == 0.5
    assert "no_path_baseline_accuracy" not in chains.summarize([chains.analyse(QUESTION, "")], [False])
