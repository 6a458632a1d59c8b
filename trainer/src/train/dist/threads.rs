//! N ranks simulated as threads of one process, summing through shared memory: what lets
//! the data-parallel logic (sharding, buckets, rank 0's writes, the stop vote, resuming
//! with another rank count) run and be tested on a CPU-only machine. `ldmkit train
//! --simulate-ranks N` uses it; GPUs use NCCL.

use super::Collective;
use candle_core::{Device, Result, Tensor};
use std::sync::{Arc, Condvar, Mutex};

struct Shared {
    world: usize,
    state: Mutex<State>,
    turn: Condvar,
}

#[derive(Default)]
struct State {
    /// Contributions to the collective in progress, by rank.
    slots: Vec<Option<Vec<f64>>>,
    arrived: usize,
    /// Collectives completed; `sum` holds the last one's result.
    generation: u64,
    sum: Vec<f64>,
    /// A rank has gone (error or done): the others get an error instead of waiting forever.
    gone: bool,
}

/// One rank's handle.
pub struct ThreadRank {
    rank: usize,
    shared: Arc<Shared>,
}

/// Handles for ranks 0..world.
pub fn group(world: usize) -> Vec<ThreadRank> {
    let shared = Arc::new(Shared {
        world,
        state: Mutex::new(State {
            slots: vec![None; world],
            ..State::default()
        }),
        turn: Condvar::new(),
    });
    (0..world)
        .map(|rank| ThreadRank {
            rank,
            shared: shared.clone(),
        })
        .collect()
}

/// Run `f` on `world` simulated ranks at once; their results in rank order.
pub fn ranks<T: Send>(world: usize, f: impl Fn(&dyn Collective) -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = group(world)
            .into_iter()
            .map(|r| {
                let f = &f;
                s.spawn(move || f(&r))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a simulated rank panicked"))
            .collect()
    })
}

impl ThreadRank {
    /// Sum `mine` with every rank's, in rank order (so every rank gets the same bits).
    fn exchange(&self, mine: Vec<f64>) -> Result<Vec<f64>> {
        let gone = || candle_core::Error::Msg("another simulated rank stopped".into());
        let s = &self.shared;
        let mut st = s.state.lock().expect("not poisoned");
        if st.gone {
            return Err(gone());
        }
        st.slots[self.rank] = Some(mine);
        st.arrived += 1;
        let generation = st.generation;
        if st.arrived == s.world {
            let mut sum = vec![0f64; st.slots[0].as_ref().map_or(0, Vec::len)];
            for v in st.slots.iter_mut().filter_map(Option::take) {
                for (a, b) in sum.iter_mut().zip(&v) {
                    *a += b;
                }
            }
            st.sum = sum;
            st.arrived = 0;
            st.generation += 1;
            s.turn.notify_all();
            return Ok(st.sum.clone());
        }
        while st.generation == generation && !st.gone {
            st = s.turn.wait(st).expect("not poisoned");
        }
        if st.generation == generation {
            return Err(gone());
        }
        Ok(st.sum.clone())
    }
}

impl Drop for ThreadRank {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.gone = true;
        }
        self.shared.turn.notify_all();
    }
}

impl Collective for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.shared.world
    }
    fn sum(&self, t: &Tensor) -> Result<Tensor> {
        let mine = t
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let sum = self.exchange(mine)?;
        Tensor::from_vec(sum, t.shape(), &Device::Cpu)?
            .to_dtype(t.dtype())?
            .to_device(t.device())
    }
    fn sum_host(&self, v: &[f64]) -> Result<Vec<f64>> {
        self.exchange(v.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rank_that_stops_releases_the_others() {
        let out = ranks(3, |c| {
            if c.rank() == 1 {
                return Err("gone".to_string());
            }
            c.sum_host(&[1.0]).map_err(|e| e.to_string())
        });
        assert_eq!(out[1], Err("gone".into()));
        assert_eq!(out[0], Err("another simulated rank stopped".into()));
        assert_eq!(out[2], Err("another simulated rank stopped".into()));
    }

    #[test]
    fn sums_come_back_to_every_rank_many_times() {
        let out = ranks(4, |c| {
            (0..50)
                .map(|i| c.sum_host(&[c.rank() as f64, i as f64]).unwrap())
                .collect::<Vec<_>>()
        });
        for r in &out {
            for (i, v) in r.iter().enumerate() {
                assert_eq!(v, &vec![6.0, 4.0 * i as f64]);
            }
        }
    }
}
