#!/usr/bin/env python3
"""Regenerates Berth's built-in EC2 catalog and its price model.

    python3 -m venv /tmp/moto && /tmp/moto/bin/pip install 'moto[ec2]==5.2.5'
    /tmp/moto/bin/python scripts/gen-catalog.py [--prices ../shared/data/ec2-on-demand-prices-us-east-1.csv]

Writes:
  catalog/data/us-east-1.json  instance-type facts for us-east-1, from the instance-type and
                               offering data the moto package ships (no prices: the facts only);
  catalog/data/price-model.json  the price model's coefficients (USD/hour per vCPU, per GiB of
                               memory and per accelerator) per instance family, fitted by least
                               squares against the given on-demand prices, with per-category and
                               global fallbacks. The price table itself is not copied.
"""
import argparse
import csv
import gzip
import json
import os
import re

import moto

RES = os.path.join(os.path.dirname(moto.__file__), "ec2", "resources")
OUT = os.path.join(os.path.dirname(__file__), "..", "catalog", "data")


def facts():
    types = json.load(gzip.open(os.path.join(RES, "instance_types.json.gz")))
    offerings = json.load(gzip.open(os.path.join(RES, "instance_type_offerings", "availability-zone", "us-east-1.json.gz")))
    zones = {}
    for o in offerings:
        zones.setdefault(o["InstanceType"], set()).add(o["Location"])
    out = []
    for name, t in sorted(types.items()):
        if name not in zones:
            continue
        gpu = (t.get("GpuInfo") or {}).get("Gpus") or []
        neuron = (t.get("NeuronInfo") or {}).get("NeuronDevices") or []
        storage = t.get("InstanceStorageInfo") or {}
        archs = ["arm64" if a == "arm64" else "amd64" for a in t["ProcessorInfo"]["SupportedArchitectures"] if a in ("x86_64", "arm64")]
        if not archs:
            continue
        out.append({
            "name": name,
            "vcpu": t["VCpuInfo"]["DefaultVCpus"],
            "memory_mib": t["MemoryInfo"]["SizeInMiB"],
            "architectures": sorted(set(archs)),
            "gpu_count": sum(g.get("Count", 0) for g in gpu),
            "gpu_manufacturer": gpu[0].get("Manufacturer") if gpu else None,
            "gpu_name": gpu[0].get("Name") if gpu else None,
            "gpu_memory_mib": (t.get("GpuInfo") or {}).get("TotalGpuMemoryInMiB"),
            "neuron_count": sum(n.get("Count", 0) for n in neuron),
            "efa": bool(t["NetworkInfo"].get("EfaSupported")),
            "max_enis": t["NetworkInfo"]["MaximumNetworkInterfaces"],
            "ipv4_per_eni": t["NetworkInfo"]["Ipv4AddressesPerInterface"],
            "hypervisor": t.get("Hypervisor"),
            "bare_metal": t.get("BareMetal", False),
            "burstable": t.get("BurstablePerformanceSupported", False),
            "usage_classes": sorted(u for u in t.get("SupportedUsageClasses", []) if u in ("on-demand", "spot")),
            "local_storage_gb": storage.get("TotalSizeInGB"),
            "zones": sorted(zones[name]),
            "on_demand_usd_per_hour": None,
        })
    return out


def family(name):
    return name.split(".")[0]


def category(name):
    return re.match(r"[a-z]+", name).group(0)


def solve_least_squares(rows):
    """Fits price = a*vcpu + b*gib + c*accel (non-negative, 3x3 normal equations)."""
    import itertools
    cols = [(r[0], r[1], r[2]) for r in rows]
    ys = [r[3] for r in rows]
    use = [i for i in range(3) if any(c[i] for c in cols)]
    best = None
    # Try every subset of the used columns and keep the best non-negative fit.
    for k in range(1, len(use) + 1):
        for subset in itertools.combinations(use, k):
            n = len(subset)
            ata = [[sum(c[subset[i]] * c[subset[j]] for c in cols) for j in range(n)] for i in range(n)]
            aty = [sum(c[subset[i]] * y for c, y in zip(cols, ys)) for i in range(n)]
            try:
                x = gauss(ata, aty)
            except ZeroDivisionError:
                continue
            if any(v < 0 for v in x):
                continue
            coef = [0.0, 0.0, 0.0]
            for i, s in enumerate(subset):
                coef[s] = x[i]
            err = sum((coef[0] * c[0] + coef[1] * c[1] + coef[2] * c[2] - y) ** 2 for c, y in zip(cols, ys))
            if best is None or err < best[0]:
                best = (err, coef)
    return best[1] if best else None


def gauss(a, b):
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for i in range(n):
        p = max(range(i, n), key=lambda r: abs(m[r][i]))
        if abs(m[p][i]) < 1e-12:
            raise ZeroDivisionError
        m[i], m[p] = m[p], m[i]
        for r in range(n):
            if r != i:
                f = m[r][i] / m[i][i]
                m[r] = [x - f * y for x, y in zip(m[r], m[i])]
    return [m[i][n] / m[i][i] for i in range(n)]


def price_model(all_facts, prices_csv):
    prices = {}
    with open(prices_csv) as f:
        for row in csv.DictReader(f):
            prices[row["instance_type"]] = float(row["on_demand_usd_per_hour"])
    groups = {"family": {}, "category": {}, "all": {"*": []}}
    for t in all_facts:
        if t["name"] not in prices:
            continue
        accel = t["gpu_count"] + t["neuron_count"]
        row = (t["vcpu"], t["memory_mib"] / 1024.0, accel, prices[t["name"]])
        groups["family"].setdefault(family(t["name"]), []).append(row)
        groups["category"].setdefault(category(t["name"]), []).append(row)
        groups["all"]["*"].append(row)
    model = {"source": os.path.basename(prices_csv), "unit": "USD/hour = per_vcpu*vCPU + per_gib*GiB + per_accelerator*accelerators"}
    for level in ("family", "category", "all"):
        model[level] = {}
        for key, rows in sorted(groups[level].items()):
            coef = solve_least_squares(rows)
            if coef:
                model[level][key] = {"per_vcpu": round(coef[0], 6), "per_gib": round(coef[1], 6), "per_accelerator": round(coef[2], 6), "samples": len(rows)}
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prices", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ec2-on-demand-prices-us-east-1.csv"))
    args = ap.parse_args()
    f = facts()
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "us-east-1.json"), "w") as out:
        json.dump({"region": "us-east-1", "source": f"moto {moto.__version__} instance-type data", "instance_types": f}, out, separators=(",", ":"))
        out.write("\n")
    with open(os.path.join(OUT, "price-model.json"), "w") as out:
        json.dump(price_model(f, args.prices), out, indent=1, sort_keys=True)
        out.write("\n")
    print(f"{len(f)} instance types")


if __name__ == "__main__":
    main()
