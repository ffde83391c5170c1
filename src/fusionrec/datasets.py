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
                n_ads: int = 10000, world_seed: int = 0) -> TaobaoData:  # fmt: skip
    """Click logs with EasyRec's taobao schema, from a known click model.

    Users have demographics and a history of (category, brand) pairs (``tag_category_list``
    and ``tag_brand_list``, parallel, ``|``-joined, most recent last); ads have a category,
    brand, campaign, customer and price level. The click log-odds are a sum of a user effect,
    an ad effect, history matches of the ad's category and brand (what DIN attention can
    find), an age x price interaction and a slot (``pid``) effect. ``buy`` is drawn from clicks.
    With ``path`` the rows are also written there as CSV (no header), atomically.

    The users, ads and their effects come from ``world_seed``; the rows drawn from them come
    from ``seed``. Calls with one ``world_seed`` share one click model, so
    ``make_taobao(400_000, seed=0)`` and ``make_taobao(100_000, seed=1)`` are a train and a
    test set of the same world.
    """
    for name, value in (("n_rows", n_rows), ("n_users", n_users), ("n_ads", n_ads)):
        if value < 1:
            raise FusionrecError(f"{name} {value}: must be at least 1")
    rng = np.random.default_rng(world_seed)
    n_cates = 300
    # users
    age = rng.integers(1, 7, n_users)
    gender = rng.integers(1, 3, n_users)
    pvalue = rng.integers(1, 4, n_users)
    shopping = rng.integers(1, 4, n_users)
    occupation = rng.integers(0, 2, n_users)
    city = rng.integers(1, 5, n_users)
    segid = rng.integers(0, 100, n_users)
    group_id = (gender - 1) * 6 + age - 1
    user_effect = rng.normal(0, 0.5, n_users)
    hist_len = rng.integers(0, 25, n_users)
    hist_cates = [_zipf_choice(rng, n_cates, k) for k in hist_len]
    hist_brands = [c * 10 + rng.integers(0, 10, len(c)) for c in hist_cates]  # brands sit inside categories
    # ads
    ad_cate = _zipf_choice(rng, n_cates, n_ads)
    ad_brand = ad_cate * 10 + rng.integers(0, 10, n_ads)
    ad_campaign = rng.integers(0, n_ads // 2 + 1, n_ads)
    ad_customer = ad_campaign // 3
    ad_price = np.clip(rng.lognormal(2.5, 0.8, n_ads).astype(np.int64), 1, 49)
    ad_effect = rng.normal(0, 0.5, n_ads)
    # rows
    rng = np.random.default_rng([world_seed, seed])
    users = _zipf_choice(rng, n_users, n_rows, 0.8)
    ads = _zipf_choice(rng, n_ads, n_rows, 0.9)
    pid = rng.integers(0, 2, n_rows)
    cate_match = np.array([ad_cate[a] in hist_cates[u] for u, a in zip(users, ads)], dtype=np.float64)
    brand_match = np.array([ad_brand[a] in hist_brands[u] for u, a in zip(users, ads)], dtype=np.float64)
    price_level = np.log(ad_price[ads])
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
        "customer": ad_customer[ads].astype(str), "brand": ad_brand[ads].astype(str), "user_id": users.astype(str),
        "cms_segid": segid[users].astype(str), "cms_group_id": group_id[users].astype(str),
        "final_gender_code": gender[users].astype(str), "age_level": age[users].astype(str),
        "pvalue_level": pvalue[users].astype(str), "shopping_level": shopping[users].astype(str),
        "occupation": occupation[users].astype(str), "new_user_class_level": city[users].astype(str),
        "tag_category_list": pa.array(cate_text[users], pa.string()),
        "tag_brand_list": pa.array(brand_text[users], pa.string()), "price": ad_price[ads].astype(np.int32),
    })  # fmt: skip
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))
        atomic_write_bytes(path, sink.getvalue().to_pybytes(), checksum=False)
    return TaobaoData(table, proba)
