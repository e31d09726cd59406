"""VQA scoring speed: vlbench's scorer vs a plain port of the official vqaEval.py.

    python benchmarks/vqa_scoring.py [--n 200000] [--seed 0] [--skip-reference]

Generates ``n`` synthetic questions with 10 annotator answers each (deterministic), including
the cases the official normalisation cares about (case, punctuation, number words, articles,
contractions, "1,000", "2.5", unanimous answers, stray whitespace), scores them with both
implementations, checks that every output is identical and prints both times and the ratio.
The target for vlbench is under 10 s for 200,000 questions.
"""

from __future__ import annotations

import argparse
import copy
import random
import re
import time
from typing import Any

# ---------------------------------------------------------------------------------------------
# Plain port of the official evaluation (GT-Vision-Lab/VQA, PythonHelperTools/vqaTools/vqa.py
# and PythonEvaluationTools/vqaEvaluation/vqaEval.py, master), step by step, without the
# progress bar. It mutates what it is given, like the original: pass copies.
# ---------------------------------------------------------------------------------------------

def _official_tables() -> dict[str, Any]:
    # The data tables are the same facts as in vlbench's normaliser; the *logic* below is
    # the official one, written out independently of vlbench's code paths.
    from vlbench.tasks.vqa.normalize import CONTRACTIONS, MANUAL_MAP

    return {
        "contractions": dict(CONTRACTIONS),
        "manualMap": dict(MANUAL_MAP),
        "articles": ["a", "an", "the"],
        "periodStrip": re.compile(r"(?!<=\d)(\.)(?!\d)"),
        "commaStrip": re.compile(r"(\d)(\,)(\d)"),
        "punct": [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
                  ">", "<", "@", "`", ",", "?", "!"],
    }


class OfficialVQA:
    """vqa.py: annotations indexed by question id; results loaded against them."""

    def __init__(self, dataset: dict | None = None, questions: dict | None = None):
        self.dataset = dataset or {}
        self.questions = questions or {}
        self.qa: dict[Any, dict] = {}
        self.qqa: dict[Any, dict] = {}
        if dataset is not None:
            self.create_index()

    def create_index(self) -> None:
        qa = {ann["question_id"]: [] for ann in self.dataset["annotations"]}
        qqa = {ann["question_id"]: [] for ann in self.dataset["annotations"]}
        for ann in self.dataset["annotations"]:
            qa[ann["question_id"]] = ann
        for ques in self.questions.get("questions", []):
            qqa[ques["question_id"]] = ques
        self.qa = qa
        self.qqa = qqa

    def get_ques_ids(self) -> list:
        return [ann["question_id"] for ann in self.dataset["annotations"]]

    def load_res(self, anns: list) -> OfficialVQA:
        res = OfficialVQA()
        res.dataset["task_type"] = self.questions.get("task_type")
        assert type(anns) is list, "results is not an array of objects"
        anns_ques_ids = [ann["question_id"] for ann in anns]
        assert set(anns_ques_ids) == set(self.get_ques_ids()), \
            "Results do not correspond to current VQA set."
        for ann in anns:
            ques_id = ann["question_id"]
            if res.dataset["task_type"] == "Multiple Choice":
                assert ann["answer"] in self.qqa[ques_id]["multiple_choices"]
            qa_ann = self.qa[ques_id]
            ann["image_id"] = qa_ann.get("image_id")
            ann["question_type"] = qa_ann["question_type"]
            ann["answer_type"] = qa_ann["answer_type"]
        res.dataset["annotations"] = anns
        res.create_index()
        return res


class OfficialVQAEval:
    """vqaEval.py's VQAEval (master), line by line."""

    def __init__(self, vqa: OfficialVQA, vqa_res: OfficialVQA, n: int = 2):
        self.n = n
        self.accuracy: dict[str, Any] = {}
        self.evalQA: dict[Any, float] = {}
        self.evalQuesType: dict[Any, dict] = {}
        self.evalAnsType: dict[Any, dict] = {}
        self.vqa = vqa
        self.vqaRes = vqa_res
        self.params = {"question_id": vqa.get_ques_ids()}
        t = _official_tables()
        self.contractions = t["contractions"]
        self.manualMap = t["manualMap"]
        self.articles = t["articles"]
        self.periodStrip = t["periodStrip"]
        self.commaStrip = t["commaStrip"]
        self.punct = t["punct"]

    def evaluate(self, ques_ids: list | None = None) -> None:
        if ques_ids is None:
            ques_ids = [ques_id for ques_id in self.params["question_id"]]
        gts = {}
        res = {}
        for ques_id in ques_ids:
            gts[ques_id] = self.vqa.qa[ques_id]
            res[ques_id] = self.vqaRes.qa[ques_id]
        acc_qa = []
        acc_ques_type: dict[Any, list] = {}
        acc_ans_type: dict[Any, list] = {}
        for ques_id in ques_ids:
            for ans_dic in gts[ques_id]["answers"]:
                ans_dic["answer"] = ans_dic["answer"].replace("\n", " ")
                ans_dic["answer"] = ans_dic["answer"].replace("\t", " ")
                ans_dic["answer"] = ans_dic["answer"].strip()
            res_ans = res[ques_id]["answer"]
            res_ans = res_ans.replace("\n", " ")
            res_ans = res_ans.replace("\t", " ")
            res_ans = res_ans.strip()
            gt_acc = []
            gt_answers = [ans["answer"] for ans in gts[ques_id]["answers"]]
            if len(set(gt_answers)) > 1:
                for ans_dic in gts[ques_id]["answers"]:
                    ans_dic["answer"] = self.process_punctuation(ans_dic["answer"])
                    ans_dic["answer"] = self.process_digit_article(ans_dic["answer"])
                res_ans = self.process_punctuation(res_ans)
                res_ans = self.process_digit_article(res_ans)
            for gt_ans_datum in gts[ques_id]["answers"]:
                other_gt_ans = [item for item in gts[ques_id]["answers"] if item != gt_ans_datum]
                matching_ans = [item for item in other_gt_ans if item["answer"] == res_ans]
                acc = min(1, float(len(matching_ans)) / 3)
                gt_acc.append(acc)
            ques_type = gts[ques_id]["question_type"]
            ans_type = gts[ques_id]["answer_type"]
            avg_gt_acc = float(sum(gt_acc)) / len(gt_acc)
            acc_qa.append(avg_gt_acc)
            if ques_type not in acc_ques_type:
                acc_ques_type[ques_type] = []
            acc_ques_type[ques_type].append(avg_gt_acc)
            if ans_type not in acc_ans_type:
                acc_ans_type[ans_type] = []
            acc_ans_type[ans_type].append(avg_gt_acc)
            self.evalQA[ques_id] = round(100 * avg_gt_acc, self.n)
        self.set_accuracy(acc_qa, acc_ques_type, acc_ans_type)

    def process_punctuation(self, in_text: str) -> str:
        out_text = in_text
        for p in self.punct:
            if (p + " " in in_text or " " + p in in_text) or \
                    (re.search(self.commaStrip, in_text) is not None):
                out_text = out_text.replace(p, "")
            else:
                out_text = out_text.replace(p, " ")
        out_text = self.periodStrip.sub("", out_text, re.UNICODE)
        return out_text

    def process_digit_article(self, in_text: str) -> str:
        out_text = []
        temp_text = in_text.lower().split()
        for word in temp_text:
            word = self.manualMap.setdefault(word, word)
            if word not in self.articles:
                out_text.append(word)
        for word_id, word in enumerate(out_text):
            if word in self.contractions:
                out_text[word_id] = self.contractions[word]
        return " ".join(out_text)

    def set_accuracy(self, acc_qa: list, acc_ques_type: dict, acc_ans_type: dict) -> None:
        self.accuracy["overall"] = round(100 * float(sum(acc_qa)) / len(acc_qa), self.n)
        self.accuracy["perQuestionType"] = {
            t: round(100 * float(sum(v)) / len(v), self.n) for t, v in acc_ques_type.items()}
        self.accuracy["perAnswerType"] = {
            t: round(100 * float(sum(v)) / len(v), self.n) for t, v in acc_ans_type.items()}


def official_score(annotations: dict, questions: dict | None, results: list,
                   copy_inputs: bool = True) -> dict[str, Any]:
    """Run the plain port (on deep copies unless told not to); return vlbench's layout."""
    if copy_inputs:
        annotations, questions, results = copy.deepcopy((annotations, questions, results))
    vqa = OfficialVQA(annotations, questions)
    vqa_res = vqa.load_res(results)
    ev = OfficialVQAEval(vqa, vqa_res, n=2)
    ev.evaluate()
    return {
        "accuracy": ev.accuracy["overall"],
        "per_answer_type": ev.accuracy["perAnswerType"],
        "per_question_type": ev.accuracy["perQuestionType"],
        "per_question": ev.evalQA,
    }


# ---------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------

# Groups of surface forms that normalise (or nearly) to the same answer.
_FORMS = [
    ["yes", "Yes", "yes.", "YES", " yes"], ["no", "No", "no!", "nope"],
    ["2", "two", "Two", "2.", "too"], ["1,000", "1000", "1 000", "one thousand"],
    ["2.5", "2.50", "2,5", "two and half"], ["red", "Red", "the red", "red.", "reddish"],
    ["t-shirt", "t shirt", "T-Shirt", "tshirt"], ["don't", "dont", "do not"],
    ["black", "Black.", "black\n", "\tblack", "a black"], ["dog", "a dog", "dogs", "the dog"],
    ["skiing", "ski", "Skiing!"], ["left", "on left", "left side"], ["none", "0", "zero"],
    ["frisbee", "frisbe", "Frisbee"], ["10:30", "10 30", "1030"], ["man's", "mans", "man"],
]
_TYPES = [("yes/no", "is the"), ("number", "how many"), ("other", "what color is the"),
          ("other", "what is the"), ("other", "what sport is")]


def make_dataset(n: int, seed: int = 0) -> tuple[dict, dict, list]:
    """Deterministic synthetic annotations, questions and results for ``n`` questions."""
    rng = random.Random(seed)
    annotations, questions, results = [], [], []
    for i in range(n):
        qid = 1_000_000 + i
        answer_type, question_type = _TYPES[rng.randrange(len(_TYPES))]
        group = _FORMS[rng.randrange(len(_FORMS))]
        if rng.random() < 0.3:
            answers = [rng.choice(group)] * 10  # unanimous
        else:
            other = _FORMS[rng.randrange(len(_FORMS))]
            answers = [rng.choice(group if rng.random() < 0.7 else other) for _ in range(10)]
        annotations.append({
            "question_id": qid, "image_id": i // 3, "question_type": question_type,
            "answer_type": answer_type, "multiple_choice_answer": answers[0],
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                        for j, a in enumerate(answers)],
        })
        questions.append({"question_id": qid, "image_id": i // 3, "question": "?"})
        pick = group if rng.random() < 0.6 else _FORMS[rng.randrange(len(_FORMS))]
        results.append({"question_id": qid, "answer": rng.choice(pick)})
    rng.shuffle(results)
    return ({"annotations": annotations}, {"task_type": "Open-Ended", "questions": questions},
            results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="number of questions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-reference", action="store_true",
                        help="time only vlbench's scorer")
    args = parser.parse_args()

    from vlbench.tasks.vqa.normalize import normalize_answer
    from vlbench.tasks.vqa.scoring import score_vqa

    annotations, questions, results = make_dataset(args.n, args.seed)
    normalize_answer.cache_clear()  # time a cold normalisation cache
    t0 = time.perf_counter()
    ours = score_vqa(annotations, questions, results)
    t_ours = time.perf_counter() - t0
    print(f"questions: {args.n}")
    print(f"vlbench score_vqa:      {t_ours:8.2f} s   accuracy {ours['accuracy']}")
    print(f"target (< 10 s):        {'met' if t_ours < 10 else 'MISSED'}")
    if args.skip_reference:
        return
    copies = copy.deepcopy((annotations, questions, results))  # the port mutates its input
    t0 = time.perf_counter()
    ref = official_score(*copies, copy_inputs=False)
    t_ref = time.perf_counter() - t0
    print(f"plain official port:    {t_ref:8.2f} s   accuracy {ref['accuracy']}")
    assert ours == ref, "vlbench and the official port disagree"
    print(f"outputs identical: yes (accuracy, {len(ref['per_answer_type'])} answer types, "
          f"{len(ref['per_question_type'])} question types, {len(ref['per_question'])} questions)")
    print(f"speed-up: {t_ref / t_ours:.1f}x")


if __name__ == "__main__":
    main()
