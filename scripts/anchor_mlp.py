"""The bench's `mlp` workload in JAX and PyTorch, with anchors.py's protocol
(data on the device, two warm-up runs, the median of 20 runs, each finished
before the clock stops): one SGD step (lr 0.1) of a network of two layers,
784 inputs, 128 hidden (relu), 10 classes (softmax cross-entropy), over a
batch of 2^k rows. Run it in the same call as `bench --workload mlp`.

    python3 scripts/anchor_mlp.py [--sizes 8,10,12] [--systems jax,torch,torch.compile]

One JSON object per line, as anchors.py prints them.
"""
import argparse, json, time

p = argparse.ArgumentParser()
p.add_argument("--sizes", default="8,10,12", help="log2 of the batch")
p.add_argument("--systems", default="jax,torch,torch.compile")
p.add_argument("--reps", type=int, default=20)
args = p.parse_args()
sizes = [int(s) for s in args.sizes.split(",")]
I, H, O = 784, 128, 10


def median(ts):
    ts = sorted(ts)
    return ts[len(ts) // 2]


def emit(system, logn, ms, device):
    print(json.dumps({"workload": "mlp", "system": system, "log2_n": logn, "ms_median": round(ms, 4), "device": device}), flush=True)


systems = args.systems.split(",")
if "jax" in systems:
    try:
        import jax, jax.numpy as jnp

        def loss(p, x, t):
            h = jax.nn.relu(x @ p[0] + p[1])
            return -(t * jax.nn.log_softmax(h @ p[2] + p[3])).sum() / x.shape[0]

        step = jax.jit(lambda p, x, t: [w - 0.1 * g for w, g in zip(p, jax.grad(loss)(p, x, t))])
        for logn in sizes:
            b = 1 << logn
            k = jax.random.PRNGKey(0)
            x = jax.random.normal(jax.random.fold_in(k, 1), (b, I), jnp.float32)
            t = jax.nn.one_hot(jnp.arange(b) % O, O, dtype=jnp.float32)
            params = [0.05 * jax.random.normal(jax.random.fold_in(k, 2), (I, H), jnp.float32), jnp.zeros(H),
                      0.05 * jax.random.normal(jax.random.fold_in(k, 3), (H, O), jnp.float32), jnp.zeros(O)]
            for _ in range(2):
                params = step(params, x, t)
            jax.block_until_ready(params)
            ts = []
            for _ in range(args.reps):
                s = time.perf_counter()
                params = step(params, x, t)
                jax.block_until_ready(params)
                ts.append((time.perf_counter() - s) * 1e3)
            emit("jax.jit", logn, median(ts), str(jax.devices()[0].device_kind))
    except ImportError as e:
        print(json.dumps({"system": "jax.jit", "skipped": str(e)}))

torch_systems = [s for s in systems if s.startswith("torch")]
if torch_systems:
    try:
        import torch

        dev = "cuda" if torch.cuda.is_available() else "cpu"
        name = torch.cuda.get_device_name() if dev == "cuda" else "cpu"

        def sync():
            if dev == "cuda":
                torch.cuda.synchronize()

        def loss(p, x, t):
            h = torch.relu(x @ p[0] + p[1])
            return -(t * torch.log_softmax(h @ p[2] + p[3], -1)).sum() / x.shape[0]

        for system in torch_systems:
            f = torch.compile(loss) if system == "torch.compile" else loss
            for logn in sizes:
                b = 1 << logn
                torch.manual_seed(0)
                x = torch.randn(b, I, device=dev)
                t = torch.nn.functional.one_hot(torch.arange(b, device=dev) % O, O).float()
                params = [(0.05 * torch.randn(I, H, device=dev)).requires_grad_(), torch.zeros(H, device=dev, requires_grad=True),
                          (0.05 * torch.randn(H, O, device=dev)).requires_grad_(), torch.zeros(O, device=dev, requires_grad=True)]

                def step():
                    for w in params:
                        w.grad = None
                    f(params, x, t).backward()
                    with torch.no_grad():
                        for w in params:
                            w.sub_(0.1 * w.grad)

                step(); step(); sync()
                ts = []
                for _ in range(args.reps):
                    s = time.perf_counter()
                    step(); sync()
                    ts.append((time.perf_counter() - s) * 1e3)
                emit(system, logn, median(ts), name)
    except ImportError as e:
        print(json.dumps({"system": "torch", "skipped": str(e)}))
