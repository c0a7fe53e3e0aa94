"""Representation geometry beyond the gap: alignment and uniformity (Wang & Isola 2020,
arXiv:2005.10242), effective rank (RankMe, Garrido et al. 2023, arXiv:2210.02885),
linear CKA (Kornblith et al. 2019, arXiv:1905.00414) and mutual k-NN alignment
(Huh et al. 2024, arXiv:2405.07987)."""
import pytest

from mmdiag.metrics.geometry import alignment, linear_cka, mutual_knn, rankme, uniformity

MKNN_K = 10


def _embeds(mm, *modalities):
    embeds = mm.acts.embeds
    missing = [m for m in modalities if m not in embeds]
    if missing:
        mm.skip(f"{mm.check} needs final {' and '.join(modalities)} embeddings; missing: {', '.join(missing)}")
    mm.require_n(2)
    return [embeds[m] for m in modalities]


def _paired(mm):
    if mm.session.config.data == "noise":
        mm.skip(f"{mm.check} needs matched image-caption pairs; --mm-data=noise has none")


@pytest.mark.mm("geometry.alignment")
def test_alignment(mm):
    _paired(mm)
    img, txt = _embeds(mm, "image", "text")
    mm.report(alignment(img, txt, alpha=2), details={"alpha": 2})


@pytest.mark.mm("geometry.uniformity", over=("modality",))
def test_uniformity(mm, modality):
    (emb,) = _embeds(mm, modality)
    mm.report(uniformity(emb, t=2), details={"t": 2})


@pytest.mark.mm("geometry.rankme", over=("modality", "layer"))
def test_rankme(mm, modality, layer):
    mm.require_modality(modality)
    mm.require_n(2)
    for k in mm.layers(modality, layer):
        states = mm.acts.pooled[modality][k]
        value = rankme(states)
        mm.report(value, details={"max": int(min(states.shape))}, params={"modality": modality, "layer": k},
                  final=False)
    mm.finish()


@pytest.mark.mm("geometry.cka")
def test_cka(mm):
    _paired(mm)
    img, txt = _embeds(mm, "image", "text")
    mm.report(linear_cka(img, txt))


@pytest.mark.mm("geometry.mknn")
def test_mknn(mm):
    _paired(mm)
    img, txt = _embeds(mm, "image", "text")
    mm.require_n(MKNN_K + 1)
    mm.report(mutual_knn(img, txt, k=MKNN_K), details={"k": MKNN_K, "chance": MKNN_K / (mm.acts.n - 1)})
