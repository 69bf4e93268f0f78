//! CPython's `random.Random` (MT19937), as far as lm-eval's few-shot sampler uses it.
//!
//! lm-eval draws few-shot examples with `random.Random(1234).sample(docs, n)` (the seed is
//! `simple_evaluate`'s `fewshot_random_seed`), one generator per task shared by all documents in
//! order. Reproducing its choices exactly needs the same generator: the Mersenne Twister of
//! Matsumoto & Nishimura (1998), seeded as CPython seeds it from an integer (`init_by_array` over
//! the 32-bit words of `abs(seed)`), `getrandbits`, `_randbelow_with_getrandbits` and
//! `Random.sample` (both of its branches: the pool for small populations, the set of picked
//! indices for large ones).

use std::collections::HashSet;

const N: usize = 624;
const M: usize = 397;

/// CPython-compatible Mersenne Twister.
#[derive(Clone, Debug)]
pub struct PyRandom {
    mt: [u32; N],
    idx: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed below 2^64.
    pub fn new(seed: u64) -> Self {
        let mut key: Vec<u32> = Vec::new();
        let mut s = seed;
        while s > 0 {
            key.push(s as u32);
            s >>= 32;
        }
        if key.is_empty() {
            key.push(0);
        }
        let mut r = PyRandom { mt: [0; N], idx: N };
        r.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        let mut k = N.max(key.len());
        while k > 0 {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                r.mt[0] = r.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
            k -= 1;
        }
        k = N - 1;
        while k > 0 {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                r.mt[0] = r.mt[N - 1];
                i = 1;
            }
            k -= 1;
        }
        r.mt[0] = 0x8000_0000;
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            let prev = self.mt[i - 1] ^ (self.mt[i - 1] >> 30);
            self.mt[i] = 1_812_433_253u32.wrapping_mul(prev).wrapping_add(i as u32);
        }
        self.idx = N;
    }

    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % N] & 0x7fff_ffff);
            let mut v = self.mt[(i + M) % N] ^ (y >> 1);
            if y & 1 == 1 {
                v ^= 0x9908_b0df;
            }
            self.mt[i] = v;
        }
        self.idx = 0;
    }

    /// The next 32-bit output (`genrand_uint32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.idx >= N {
            self.twist();
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// `getrandbits(k)` for `k ≤ 32`.
    pub fn getrandbits(&mut self, k: u32) -> u32 {
        if k == 0 {
            return 0;
        }
        self.next_u32() >> (32 - k.min(32))
    }

    /// `_randbelow_with_getrandbits(n)`: uniform in `0..n` by rejection, `n > 0`, `n < 2^32`.
    pub fn randbelow(&mut self, n: usize) -> usize {
        let k = usize::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// The indices `Random.sample(range(n), k)` returns, in order. `k ≤ n`.
    pub fn sample_indices(&mut self, n: usize, k: usize) -> Vec<usize> {
        let k = k.min(n);
        let mut setsize = 21usize;
        if k > 5 {
            // CPython: setsize += 4 ** _ceil(_log(k * 3, 4)), with math.log(x, base) = ln x / ln base.
            let e = ((k * 3) as f64).ln() / 4f64.ln();
            setsize += 4usize.pow(e.ceil() as u32);
        }
        let mut out = Vec::with_capacity(k);
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow(n - i);
                out.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut selected = HashSet::new();
            for _ in 0..k {
                let mut j = self.randbelow(n);
                while selected.contains(&j) {
                    j = self.randbelow(n);
                }
                selected.insert(j);
                out.push(j);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values printed by CPython 3.11.7 (the reference, not this code):
    //   r = random.Random(1234); [r.getrandbits(32) for _ in range(3)]
    //   r = random.Random(1234); r.sample(range(10), 3), r.sample(range(10), 3)
    //   r = random.Random(1234); r.sample(range(100), 8)      (the set branch: 100 > 21 + 4**3)
    //   r = random.Random(0); r.sample(range(5), 5)
    #[test]
    fn matches_cpython() {
        let mut r = PyRandom::new(1234);
        assert_eq!(
            [r.next_u32(), r.next_u32(), r.next_u32()],
            [4150886329, 3342196574, 1892932127]
        );
        let mut r = PyRandom::new(1234);
        assert_eq!(r.sample_indices(10, 3), vec![7, 1, 0]);
        assert_eq!(r.sample_indices(10, 3), vec![1, 0, 9]);
        let mut r = PyRandom::new(1234);
        assert_eq!(r.sample_indices(100, 8), vec![99, 56, 14, 0, 11, 74, 4, 85]);
        let mut r = PyRandom::new(0);
        assert_eq!(r.sample_indices(5, 5), vec![3, 4, 0, 1, 2]);
    }
}
