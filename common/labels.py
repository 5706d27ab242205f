"""Logits -> probabilities -> the five most likely classes."""

import numpy as np

TOP_K = 5


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    e = np.exp(z)
    return e / e.sum()


def top5(logits: np.ndarray, labels: list[str]) -> list[dict]:
    probs = softmax(logits)
    best = np.argsort(-probs, kind="stable")[:TOP_K]
    return [{"class_id": int(i), "label": labels[i], "prob": float(probs[i])} for i in best]


def format_top5(top: list[dict]) -> str:
    return "\n".join(f"  {t['class_id']:>4}  {t['label']:<30} {t['prob'] * 100:6.2f}%" for t in top)
