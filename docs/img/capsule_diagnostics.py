"""docs/img/capsule_diagnostics.png from the TensorBoard events of two short runs.

    python docs/img/capsule_diagnostics.py <fc run> <length run> docs/img/capsule_diagnostics.png

Each panel is one TensorBoard card of the ``capsules/`` section (tag in its title), drawn
from the logged values with matplotlib, as TensorBoard shows them at the last step.
"""

import io
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

fc_run, length_run, out = sys.argv[1:4]


def load(run):
    (event_file,) = Path(run).rglob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file.parent), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    return events


def scalars(events, tag):
    points = events.Scalars(tag)
    return [p.step for p in points], [p.value for p in points]


def histogram(events, tag, index=-1):
    h = events.Histograms(tag)[index]
    value = h.histogram_value
    limits = np.array(value.bucket_limit)
    counts = np.array(value.bucket)
    left = np.concatenate([[value.min], limits[:-1]])
    right = np.minimum(limits, value.max)
    return h.step, left, right, counts / max(counts.sum(), 1)


COLORS = {"real": "tab:blue", "fake": "tab:orange"}
fc, length = load(fc_run), load(length_run)
fig, axes = plt.subplots(2, 3, figsize=(15, 8.2))
fig.patch.set_facecolor("#f5f5f5")


def card(ax, tag, note=""):
    ax.set_title(f"{tag}\n{note}", fontsize=9, loc="left", family="monospace")
    ax.set_facecolor("white")
    ax.grid(alpha=0.3)


# 1. mean coupling entropy per routing iteration, real (solid) vs fake (dashed)
ax = axes[0, 0]
for r, shade in zip((1, 2, 3), (0.35, 0.65, 1.0), strict=True):
    for name, style in (("real", "-"), ("fake", "--")):
        steps, values = scalars(fc, f"capsules/entropy/{name}/iter{r}")
        ax.plot(
            steps,
            values,
            style,
            color=COLORS[name],
            alpha=shade,
            marker=".",
            label=f"{name}, iteration {r}",
        )
ax.axhline(math.log(10), color="grey", lw=0.8, ls=":")
ax.text(0, math.log(10), " log 10 (uniform)", fontsize=7, va="bottom", color="grey")
ax.set_xlabel("step (batches)")
ax.set_ylabel("nats")
ax.legend(fontsize=7, ncol=2)
card(ax, "capsules/entropy/{real,fake}/iter{1,2,3}", "mean coupling entropy (fc head)")

# 2. TensorBoard's offset view of one entropy histogram over the validations
ax = axes[0, 1]
tag = "capsules/entropy_hist/real/iter3"
n = len(fc.Histograms(tag))
for i in range(n):
    step, left, right, share = histogram(fc, tag, i)
    centers = (left + right) / 2
    offset = (n - 1 - i) * 0.08
    ax.fill_between(
        centers,
        offset,
        offset + share,
        color=plt.cm.Blues(0.35 + 0.6 * i / n),
        alpha=0.85,
        lw=0.5,
        edgecolor="k",
        zorder=n - i,
    )
    ax.text(centers[-1], offset, f" {step}", fontsize=6, va="bottom")
ax.set_xlabel("entropy of one input capsule's couplings (nats)")
ax.set_yticks([])
card(ax, tag, "histogram per validation (front = last, step on the right)")

# 3. output-capsule lengths at the last validation, real vs fake
ax = axes[0, 2]
for name in ("real", "fake"):
    step, left, right, share = histogram(fc, f"capsules/length_hist/{name}")
    ax.stairs(
        share,
        np.concatenate([left, right[-1:]]),
        color=COLORS[name],
        fill=True,
        alpha=0.45,
        label=name,
    )
ax.set_xlabel("output capsule length")
ax.set_ylabel("share of capsules")
ax.legend(fontsize=8)
card(ax, "capsules/length_hist/{real,fake}", f"all 10 capsules x 64 images, step {step}")

# 4. the logged bar chart image, last validation
ax = axes[1, 0]
image = fc.Images("capsules/longest")[-1]
ax.imshow(Image.open(io.BytesIO(image.encoded_image_string)))
ax.axis("off")
card(ax, "capsules/longest", f"the logged image, step {image.step}")

# 5. agreement
ax = axes[1, 1]
for name in ("real", "fake"):
    steps, values = scalars(fc, f"capsules/agreement/{name}")
    ax.plot(steps, values, color=COLORS[name], marker=".", label=name)
ax.set_xlabel("step (batches)")
ax.set_ylabel("mean cosine")
ax.legend(fontsize=8)
card(ax, "capsules/agreement/{real,fake}", "coupling-weighted cos(u_hat_j|i, v_j)")

# 6. the length head's score capsule
ax = axes[1, 2]
for name in ("real", "fake"):
    step, left, right, share = histogram(length, f"capsules/score_length_hist/{name}")
    ax.stairs(
        share,
        np.concatenate([left, right[-1:]]),
        color=COLORS[name],
        fill=True,
        alpha=0.45,
        label=name,
    )
ax.axvline(0.5, color="grey", lw=0.8, ls=":")
ax.set_xlabel("length of capsule 0 = D(x)")
ax.set_ylabel("share of images")
ax.legend(fontsize=8)
card(ax, "capsules/score_length_hist/{real,fake}", f"length head run, step {step}")

fig.suptitle(
    "TensorBoard, section capsules/ - discriminator=capsule_small, 200 batches of "
    "MNIST, validation every 25 batches",
    fontsize=11,
)
fig.tight_layout()
fig.savefig(out, dpi=80, facecolor=fig.get_facecolor())
