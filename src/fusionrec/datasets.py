"""Generated data sets with a known truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from fusionrec._atomic import atomic_write_bytes
from fusionrec.errors import FusionrecError

TAOBAO_COLUMNS = [
    "clk", "buy", "pid", "adgroup_id", "cate_id", "campaign_id", "customer", "brand", "user_id", "cms_segid",
    "cms_group_id", "final_gender_code", "age_level", "pvalue_level", "shopping_level", "occupation",
    "new_user_class_level", "tag_category_list", "tag_brand_list", "price",
]  # fmt: skip


@dataclass
class TaobaoData:
    table: pa.Table  # the rows, columns as in TAOBAO_COLUMNS (the file has no header)
    click_proba: np.ndarray  # each row's true click probability: the oracle's score


def _zipf_choice(rng, n_items: int, size: int, a: float = 1.1) -> np.ndarray:
    weights = 1.0 / np.arange(1, n_items + 1) ** a
    return rng.choice(n_items, size=size, p=weights / weights.sum())


def make_taobao(n_rows: int, seed: int = 0, path: str | Path | None = None, *, n_users: int = 20000,
                n_ads: int = 10000, world_seed: int = 0, new_id_share: float | None = None) -> TaobaoData:  # fmt: skip
    """Click logs with EasyRec's taobao schema, from a known click model, shaped like real logs.

    Users have demographics and a history of (category, brand) pairs (``tag_category_list``
    and ``tag_brand_list``, parallel, ``|``-joined, most recent last); ads have a category,
    brand, campaign, customer and price. The click log-odds are a sum of a user effect, an ad
    effect, history matches of the ad's category and brand (what DIN attention can find), an
    age x price interaction and a slot (``pid``) effect. ``buy`` is drawn from clicks. With
    ``path`` the rows are also written there as CSV (no header), atomically.

    What real logs have and a model must survive: prices over the real range (1 to tens of
    thousands, log-normal with a heavy tail: most exceed the ``num_buckets: 50`` of EasyRec's
    taobao config); Zipf-skewed user, ad and category frequencies; about 10% of users with an
    empty history; empty fields (``pvalue_level`` of 6% of users, ``new_user_class_level`` of
    4%, ``brand`` of 3% of ads); and ids never seen before: rows of ``seed`` 0 (the first day,
    a training set) come from established users and ads only, rows of every other seed take
    ``new_id_share`` (default 3%) of their users and, independently, of their ads from
    newcomers that seed 0 never shows.

    The users, ads and their effects come from ``world_seed``; the rows drawn from them come
    from ``seed``. Calls with one ``world_seed`` share one click model, so
    ``make_taobao(400_000, seed=0)`` and ``make_taobao(100_000, seed=1)`` are a train and a
    test set of the same world.
    """
    for name, value in (("n_rows", n_rows), ("n_users", n_users), ("n_ads", n_ads)):
        if value < 1:
            raise FusionrecError(f"{name} {value}: must be at least 1")
    if new_id_share is None:
        new_id_share = 0.0 if seed == 0 else 0.03
    if not 0.0 <= new_id_share <= 1.0:
        raise FusionrecError(f"new_id_share {new_id_share}: must be in [0, 1]")
    rng = np.random.default_rng(world_seed)
    n_cates = 300
    n_new_users, n_new_ads = max(1, n_users // 10), max(1, n_ads // 10)
    n_all_users, n_all_ads = n_users + n_new_users, n_ads + n_new_ads
    # users (established ones first, then the newcomers)
    age = rng.integers(1, 7, n_all_users)
    gender = rng.integers(1, 3, n_all_users)
    pvalue = rng.integers(1, 4, n_all_users)
    shopping = rng.integers(1, 4, n_all_users)
    occupation = rng.integers(0, 2, n_all_users)
    city = rng.integers(1, 5, n_all_users)
    segid = rng.integers(0, 100, n_all_users)
    group_id = (gender - 1) * 6 + age - 1
    user_effect = rng.normal(0, 0.5, n_all_users)
    hist_len = np.where(rng.random(n_all_users) < 0.1, 0, rng.integers(1, 25, n_all_users))
    hist_cates = [_zipf_choice(rng, n_cates, k) for k in hist_len]
    hist_brands = [c * 10 + rng.integers(0, 10, len(c)) for c in hist_cates]  # brands sit inside categories
    pvalue_text = np.where(rng.random(n_all_users) < 0.06, "", pvalue.astype(str))
    city_text = np.where(rng.random(n_all_users) < 0.04, "", city.astype(str))
    # ads
    ad_cate = _zipf_choice(rng, n_cates, n_all_ads)
    ad_brand = ad_cate * 10 + rng.integers(0, 10, n_all_ads)
    ad_brand_text = np.where(rng.random(n_all_ads) < 0.03, "", ad_brand.astype(str))
    ad_campaign = rng.integers(0, n_all_ads // 2 + 1, n_all_ads)
    ad_customer = ad_campaign // 3
    ad_price = np.clip(np.round(rng.lognormal(4.3, 1.1, n_all_ads)), 1, 99999).astype(np.int64)
    ad_effect = rng.normal(0, 0.5, n_all_ads)
    # rows
    rng = np.random.default_rng([world_seed, seed])
    users = _zipf_choice(rng, n_users, n_rows, 0.8)
    ads = _zipf_choice(rng, n_ads, n_rows, 0.9)
    new_users = rng.random(n_rows) < new_id_share
    users[new_users] = n_users + rng.integers(0, n_new_users, int(new_users.sum()))
    new_ads = rng.random(n_rows) < new_id_share
    ads[new_ads] = n_ads + rng.integers(0, n_new_ads, int(new_ads.sum()))
    pid = rng.integers(0, 2, n_rows)
    cate_match = np.array([ad_cate[a] in hist_cates[u] for u, a in zip(users, ads)], dtype=np.float64)
    brand_match = np.array([ad_brand_text[a] != "" and ad_brand[a] in hist_brands[u] for u, a in zip(users, ads)],
                           dtype=np.float64)  # fmt: skip
    price_level = 2.5 + 0.8 * (np.log(ad_price[ads]) - 4.3) / 1.1  # standardized log price, on the old scale
    logits = (
        -2.2 + user_effect[users] + ad_effect[ads] + 1.0 * cate_match + 1.2 * brand_match
        + 0.25 * (age[users] - 3.5) * (price_level - 2.5) + 0.3 * pid - 0.2 * (pvalue[users] == 1) * price_level
    )  # fmt: skip
    proba = 1.0 / (1.0 + np.exp(-logits))
    clk = (rng.random(n_rows) < proba).astype(np.int32)
    buy = (clk & (rng.random(n_rows) < 0.05)).astype(np.int32)
    join = lambda values: "|".join(str(v) for v in values)  # noqa: E731
    cate_text = np.array([join(c) for c in hist_cates], dtype=object)
    brand_text = np.array([join(b) for b in hist_brands], dtype=object)
    table = pa.table({
        "clk": clk, "buy": buy, "pid": np.char.add("430548_", pid.astype(str)),
        "adgroup_id": ads.astype(str), "cate_id": ad_cate[ads].astype(str), "campaign_id": ad_campaign[ads].astype(str),
        "customer": ad_customer[ads].astype(str), "brand": ad_brand_text[ads], "user_id": users.astype(str),
        "cms_segid": segid[users].astype(str), "cms_group_id": group_id[users].astype(str),
        "final_gender_code": gender[users].astype(str), "age_level": age[users].astype(str),
        "pvalue_level": pvalue_text[users], "shopping_level": shopping[users].astype(str),
        "occupation": occupation[users].astype(str), "new_user_class_level": city_text[users],
        "tag_category_list": pa.array(cate_text[users], pa.string()),
        "tag_brand_list": pa.array(brand_text[users], pa.string()), "price": ad_price[ads].astype(np.int32),
    })  # fmt: skip
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))
        atomic_write_bytes(path, sink.getvalue().to_pybytes(), checksum=False)
    return TaobaoData(table, proba)


def make_ranking(n_queries: int, seed: int, n_features: int = 40):
    """A generated learning-to-rank set with a known truth, large enough (thousands of queries)
    that NDCG@10 differences between models are not noise: 10-60 documents per query, features shifted per query (comparable within a query only),
    relevance 0-4 (mostly 0) from a nonlinear score (linear terms, a threshold interaction, a
    sine, a product) plus noise, 12 of 40 features pure noise. Returns X, y, group sizes."""
    weights = np.random.default_rng(7).normal(size=8)  # one truth for every seed
    rng = np.random.default_rng(seed)
    sizes = rng.integers(10, 61, n_queries)
    query = np.repeat(np.arange(n_queries), sizes)
    X = rng.normal(size=(int(sizes.sum()), n_features)).astype(np.float32)
    X += rng.normal(size=(n_queries, n_features)).astype(np.float32)[query]
    local = X - (np.add.reduceat(X, np.r_[0, np.cumsum(sizes)[:-1]]) / sizes[:, None])[query]
    score = (local[:, :8] @ weights + 1.5 * (local[:, 8] > 0.5) * local[:, 9] + np.sin(2 * local[:, 10])
             + 0.7 * local[:, 11] * local[:, 12] + 0.5 * local[:, 13] ** 2)  # fmt: skip
    y = np.digitize(score + rng.normal(scale=1.5, size=score.shape[0]), [2.5, 4.0, 5.0, 6.0]).astype(np.float64)
    return X, y, sizes
