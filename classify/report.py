"""The files and lines of ``mtf-classify score``: ``report.json``, ``report.md`` and the summary.

``report.json`` holds every number (the sections built by :mod:`classify.shift`,
:mod:`classify.leak` and :mod:`classify.pseudo_labels`); ``report.md`` lays the same
numbers out as tables with one line on how to read each (:func:`format_markdown`); the
terminal gets one line per task and check (:func:`summary_lines`). Both files are written
atomically (:func:`write_report`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from classify.plots import shown_classes
from gan.util import atomic_write_text

__all__ = ["REPORT_VERSION", "format_markdown", "summary_lines", "json_default", "write_report"]

#: The report's layout version (bump when a key changes meaning).
REPORT_VERSION = 1


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: Optional[float], fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _header_markdown(report: dict[str, Any]) -> list[str]:
    g, r = report["generated"], report["reference"]
    lines = ["# Attribute report", ""]
    if g["kind"] == "network":
        towards = (f" towards each face's class mean w ({g['trunc_center_samples']} z per class)"
                   if g.get("trunc_center") == "class" else "")
        lines.append(f"Generated: {g['num']} images from `{g['network']}` (seeds {g['seeds']}, truncation "
                     f"{g['truncation_psi']}{towards}, conditions: {g['conditions']}), {g['resolution']} px.")
    else:
        lines.append(f"Generated: {g['num']} images from `{g['images']}`, {g['resolution']} px.")
    if r is not None:
        lines.append(f"Reference: {r['num']} images from `{r['path']}`, {r['resolution']} px.")
    lines += ["", "Shares are of arg-max predictions; both sides go through the same classifier and the same "
              "transform, so its errors and the resolution change affect both alike. *BBSE* estimates the true "
              "shares from the classifier's test confusion matrix (Lipton et al. 2018). TV is the total variation "
              "distance (0 same, 1 disjoint); KL is KL(reference || generated) in nats.", ""]
    return lines


def _task_markdown(task: str, t: dict[str, Any]) -> list[str]:
    ref = t["reference"]
    acc = _pct(t["classifier_test_accuracy"])
    ref_acc = (f", accuracy on the labelled reference {_pct(ref['accuracy'])}"
               if ref and ref["accuracy"] is not None else "")
    lines = [f"## {task}", "", f"Classifier `{t['classifier']}` ({t['model']}, test accuracy {acc}{ref_acc}).", ""]
    head = ["class", "generated", "generated (BBSE)"]
    if ref:
        head += ["reference", "reference (BBSE)"] + (["reference (true)"] if ref["true_share"] else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    shown = shown_classes(t)
    for i, c in enumerate(t["classes"]):
        if i not in shown:
            continue
        cells = [c, _pct(t["generated"]["share"][i]),
                 _pct(t["generated"]["corrected"][i]) if t["generated"]["corrected"] else "-"]
        if ref:
            cells += [_pct(ref["share"][i]), _pct(ref["corrected"][i]) if ref["corrected"] else "-"]
            if ref["true_share"]:
                cells.append(_pct(ref["true_share"][i]))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if ref:
        lines.append(f"TV {_num(t['tv'])}, KL {_num(t['kl'])} nats; after BBSE: TV {_num(t['tv_corrected'])}, "
                     f"KL {_num(t['kl_corrected'])}. Mean confidence: generated "
                     f"{_num(t['generated']['mean_confidence'], '.2f')}, "
                     f"reference {_num(ref['mean_confidence'], '.2f')}.")
    if t["bbse"] and t["bbse"].get("note"):
        lines.append(f"BBSE: {t['bbse']['note']}.")
    lines += ["", f"![{task} confidence]({t['files']['confidence']}) ![{task} samples]({t['files']['samples']})", ""]
    return lines


def _consistency_markdown(c: dict[str, Any]) -> list[str]:
    lines = [f"## Conditional consistency ({c['task']})", "",
             "Share of the faces generated with each condition that the classifier assigns to that class, beside "
             f"the classifier's own recall of the class on {c['classifier_recall_source'] or '(unknown)'}: "
             "agreement well below the recall is the generator's failure, not the classifier's.", "",
             "| condition | images | agreement | classifier recall |", "|---|---|---|---|"]
    for name, n in zip(c["conditions"], c["counts"]):
        lines.append(f"| {name} | {n} | {_pct(c['agreement'][name])} | {_pct(c['classifier_recall'].get(name))} |")
    return lines + ["", f"![consistency]({c['file']})", ""]


def _sweep_markdown(sw: dict[str, Any]) -> list[str]:
    """Per task a table: psi by class (predicted share, BBSE in brackets), TV to the reference."""
    towards = (f"each face's class mean w ({sw['trunc_center_samples']} z per class)"
               if sw.get("trunc_center") == "class" else "the global mean `w_avg`")
    lines = ["## Truncation sweep", "", f"The same {sw['num']} seeds and conditions at each psi, truncated towards "
             f"{towards}. Shares are predicted (BBSE-corrected in brackets); TV is to the reference's predicted "
             "(BBSE) shares. Truncation towards one global mean narrows the mix towards the majority's look.", ""]
    for task, t in sw["tasks"].items():
        share = np.asarray(t["share"])  # [P, K]
        shown = sorted(np.argsort(-share.max(0), kind="stable")[:8].tolist())
        head = ["psi"] + [t["classes"][k] for k in shown] + ["TV", "TV (BBSE)"]
        lines += [f"**{task}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, psi in enumerate(sw["psi"]):
            cells = [f"{psi:g}"]
            for k in shown:
                corr = f" ({_pct(t['corrected'][i][k])})" if t["corrected"] is not None else ""
                cells.append(_pct(share[i, k]) + corr)
            cells += [_num(t["tv"][i]) if t["tv"] is not None else "-",
                      _num(t["tv_corrected"][i]) if t["tv_corrected"] is not None else "-"]
            lines.append("| " + " | ".join(cells) + " |")
        if t["reference_share"] is not None:
            cells = ["reference"] + [_pct(t["reference_share"][k]) + (f" ({_pct(t['reference_corrected'][k])})"
                                                                       if t["reference_corrected"] else "")
                                     for k in shown] + ["", ""]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines + [f"![truncation]({sw['file']})", ""]


def _memorization_markdown(m: dict[str, Any]) -> list[str]:
    s = m["summary"]
    below = s.get("fraction_below", {})
    return ["## Memorization", "", f"Nearest {m['reference_role']} image of every generated face in "
            f"{m['feature_space']} ({s['metric']} distance).", "",
            "| | median distance | share below held-out p1 | share below held-out p5 |", "|---|---|---|---|",
            f"| generated | {_num(s['median_distance'])} | {_pct(below.get('p1'))} | {_pct(below.get('p5'))} |",
            f"| held-out real ({m['heldout']}) | {_num(s.get('heldout_median_distance'))} | 1% (by definition) | 5% |",
            "", "Without copying the generated shares are about 1% and 5%; many times more means the generator "
            "reproduces training images.", "", f"![closest pairs]({m['file']})", ""]


def _identity_markdown(lk: dict[str, Any]) -> list[str]:
    cal = lk["calibration"]
    lines = ["## Identity leak", "", f"{lk['count']} of {lk['num']} generated faces ({_pct(lk['fraction'])}) are "
             f"assigned to a known person with confidence >= {lk['threshold']:.3f} ({cal['rule']}; held-out "
             f"accuracy {_pct(cal['heldout_accuracy'])} on {cal['heldout_images']} images).", ""]
    if "stranger_images" not in cal:
        lines += ["Without `--strangers` (faces of people the classifier does not know) this threshold only fixes "
                  "the recall on real look-alikes; it does not bound false matches, so read the share as an upper "
                  "bound.", ""]
    if lk["per_person"]:
        lines += ["| person | flagged faces |", "|---|---|"]
        lines += [f"| {p} | {n} |" for p, n in list(lk["per_person"].items())[:20]]
    return lines + ["", f"![leaks]({lk['file']})", ""]


def format_markdown(report: dict[str, Any]) -> str:
    """``report.md``: the numbers of ``report.json`` as tables, with one line on how to read each."""
    lines = _header_markdown(report)
    for task, t in report["tasks"].items():
        lines += _task_markdown(task, t)
    if report.get("consistency"):
        lines += _consistency_markdown(report["consistency"])
    if report.get("truncation_sweep"):
        lines += _sweep_markdown(report["truncation_sweep"])
    if report.get("memorization"):
        lines += _memorization_markdown(report["memorization"])
    if report.get("identity_leak"):
        lines += _identity_markdown(report["identity_leak"])
    if report.get("identity_leak_skipped"):
        lines += ["## Identity leak", "", f"Skipped: {report['identity_leak_skipped']}", ""]
    p = report.get("predictions")
    if p:
        lines += ["## Predictions", "", f"`{p['path']}`: {p['rows']} rows of {p['images']} images "
                  f"({p['dropped']} dropped: no prediction above --min-confidence {p['min_confidence']}).", ""]
    lines += ["![attributes](attributes.png)", ""]
    return "\n".join(lines)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The short summary printed at the end: one line per task and check."""
    lines = []
    for task, t in report["tasks"].items():
        gen = ", ".join(f"{c} {100 * s:.0f}%" for c, s in list(zip(t["classes"], t["generated"]["share"]))[:6])
        line = f"{task}: generated {gen}"
        if t["reference"]:
            ref = ", ".join(f"{100 * s:.0f}%" for s in t["reference"]["share"][:6])
            line += f" | reference {ref} | TV {t['tv']:.3f}"
            if t["tv_corrected"] is not None:
                line += f" (BBSE {t['tv_corrected']:.3f})"
        lines.append(line)
    c = report.get("consistency")
    if c:
        agreement = [f"{n} {100 * a:.0f}% (classifier {_pct(c['classifier_recall'].get(n))})"
                     for n, a in c["agreement"].items()]
        lines.append(f"conditional consistency ({c['task']}): " + ", ".join(agreement))
    sw = report.get("truncation_sweep")
    for task, t in (sw["tasks"] if sw else {}).items():
        psi = "/".join(f"{p:g}" for p in sw["psi"])
        top = int(np.argmax(np.asarray(t["share"]).max(0)))
        shares = "/".join(f"{100 * r[top]:.0f}%" for r in t["share"])
        tv = f"; TV {'/'.join(f'{v:.2f}' for v in t['tv'])}" if t["tv"] is not None else ""
        lines.append(f"truncation sweep ({task}, psi {psi}, towards {sw['trunc_center']} centre): "
                     f"{t['classes'][top]} {shares}{tv}")
    m = report.get("memorization")
    if m and "fraction_below" in m["summary"]:
        lines.append(f"memorization: {100 * m['summary']['fraction_below']['p1']:.1f}% of generated faces closer to "
                     f"the {m['reference_role']} than 99% of held-out real images (about 1% expected without copying)")
    lk = report.get("identity_leak")
    if lk:
        lines.append(f"identity leak: {lk['count']} of {lk['num']} generated faces match a known person "
                     f"(confidence >= {lk['threshold']:.3f})")
    p = report.get("predictions")
    if p:
        lines.append(f"predictions: {p['rows']} rows in {p['path']} ({p['dropped']} images dropped as uncertain)")
    return lines


def json_default(o: Any) -> Any:
    """``json.dumps`` fallback: numpy arrays and scalars as plain numbers, paths as strings."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def write_report(report: dict[str, Any], outdir: Path) -> None:
    """``report.json`` (every number) and ``report.md`` (:func:`format_markdown`) in ``outdir``, atomically."""
    atomic_write_text(outdir / "report.json", json.dumps(report, indent=1, default=json_default) + "\n")
    atomic_write_text(outdir / "report.md", format_markdown(report))
