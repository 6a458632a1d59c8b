//! Exponential moving average of the weights with LitEma's schedule (CompVis
//! `ldm/modules/ema.py`): `decay = min(0.9999, (1+n)/(10+n))` at update n, shadow −=
//! (1−decay)·(shadow − weight). Updated once per optimizer step, as diffusers' `EMAModel`
//! does (LitEma's Lightning hook fires per micro-batch; with no accumulation they agree).

use candle_core::{Result, Tensor, Var};

pub struct Ema {
    pub max_decay: f64,
    pub updates: u64,
    pub shadow: Vec<Tensor>,
}

impl Ema {
    pub fn new(vars: &[Var], max_decay: f64) -> Result<Ema> {
        Ok(Ema {
            max_decay,
            updates: 0,
            shadow: vars
                .iter()
                .map(|v| v.as_tensor().detach().copy())
                .collect::<Result<_>>()?,
        })
    }

    pub fn decay(&self) -> f64 {
        let n = self.updates as f64;
        self.max_decay.min((1.0 + n) / (10.0 + n))
    }

    pub fn update(&mut self, vars: &[Var]) -> Result<()> {
        self.updates += 1;
        let keep = 1.0 - self.decay();
        for (s, v) in self.shadow.iter_mut().zip(vars) {
            let delta = ((&*s - v.as_tensor().detach())? * keep)?;
            *s = (&*s - delta)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_ramps_as_litema() {
        let dev = candle_core::Device::Cpu;
        let var = Var::new(&[1f32, 2.0], &dev).unwrap();
        let mut ema = Ema::new(std::slice::from_ref(&var), 0.9999).unwrap();
        assert!((ema.decay() - 0.1).abs() < 1e-12);
        var.set(&Tensor::new(&[3f32, 2.0], &dev).unwrap()).unwrap();
        ema.update(std::slice::from_ref(&var)).unwrap();
        // n = 1: decay 2/11, shadow = 1 − (9/11)(1 − 3)
        let got = ema.shadow[0].to_vec1::<f32>().unwrap();
        assert!((got[0] - (1.0 + 2.0 * 9.0 / 11.0)).abs() < 1e-6, "{got:?}");
        assert_eq!(got[1], 2.0);
    }
}
