"""HMM fit speed: hmmlearn vs gradus on the same data, states and iterations.

    pip install hmmlearn
    python bench/dynamics/hmm_fit.py --write bench/dynamics/hmm_data.json   # data + initialisation
    python bench/dynamics/hmm_fit.py --data  bench/dynamics/hmm_data.json   # hmmlearn timing
    cargo run --release -p gradus-dynamics --example dynamics_bench -- hmm-fit bench/dynamics/hmm_data.json

Shape of the paper's setting: 40 runs x 100 checkpoints x 14 z-scored statistics, 6 states,
50 EM iterations exactly (tol = -inf on both sides), diag and full covariance, from the same
initialisation (init_params=""), best of 3. Both print one JSON line; compare seconds_best_of_3.
Set OMP_NUM_THREADS/RAYON_NUM_THREADS to the same core count on both sides.
"""
import argparse
import json
import time

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--write")
p.add_argument("--data")
p.add_argument("--runs", type=int, default=40)
p.add_argument("--length", type=int, default=100)
p.add_argument("--features", type=int, default=14)
p.add_argument("--states", type=int, default=6)
p.add_argument("--n-iter", type=int, default=50)
a = p.parse_args()

if a.write:
    rng = np.random.RandomState(0)
    K, D = a.states, a.features
    centres = rng.randn(K, D) * 1.5
    seqs = []
    for _ in range(a.runs):
        # A left-to-right walk through the centres with noise, z-scored per run like the real data.
        bounds = np.sort(rng.choice(np.arange(1, a.length), K - 1, replace=False))
        state = np.searchsorted(bounds, np.arange(a.length), side="right")
        x = centres[state] + rng.randn(a.length, D)
        x = (x - x.mean(0)) / x.std(0)
        seqs.append(x.tolist())
    init = {
        "startprob": (np.ones(K) / K).tolist(),
        "transmat": ((np.eye(K) * 0.5) + 0.5 / K).tolist(),
        "means": rng.randn(K, D).tolist(),
        "covars_diag": np.ones((K, D)).tolist(),
        "covars_full": np.tile(np.eye(D), (K, 1, 1)).tolist(),
    }
    json.dump({"k": K, "d": D, "n_iter": a.n_iter, "sequences": seqs, "init": init}, open(a.write, "w"))
    print(f"wrote {a.write}")

if a.data:
    import hmmlearn
    from hmmlearn import hmm

    f = json.load(open(a.data))
    seqs = [np.array(s) for s in f["sequences"]]
    X, lengths = np.concatenate(seqs), [len(s) for s in seqs]
    for cov in ["diag", "full"]:
        best, ll = float("inf"), None
        for _ in range(3):
            m = hmm.GaussianHMM(n_components=f["k"], covariance_type=cov, n_iter=f["n_iter"],
                                tol=-np.inf, init_params="", params="stmc", implementation="log")
            m.startprob_ = np.array(f["init"]["startprob"])
            m.transmat_ = np.array(f["init"]["transmat"])
            m.means_ = np.array(f["init"]["means"])
            m.covars_ = np.array(f["init"]["covars_" + cov])
            t0 = time.perf_counter()
            m.fit(X, lengths)
            best = min(best, time.perf_counter() - t0)
            ll = m.monitor_.history[-1]
        print(json.dumps({"bench": "hmm_fit", "impl": "hmmlearn " + hmmlearn.__version__, "covariance": cov,
                          "k": f["k"], "d": f["d"], "n_obs": int(len(X)), "n_iter": f["n_iter"],
                          "seconds_best_of_3": best, "final_loglik": ll}))
