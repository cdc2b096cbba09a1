//! Instruments by symbol: the table each new order, mass cancel and operator action looks
//! its instrument up in.
//!
//! Built once from the configuration and never changed, so it is a plain open-addressed
//! table: a power-of-two array at most half full, a multiplicative hash of the symbol's 8
//! bytes (the top bits of one multiplication) and linear probing. A quarter full at most
//! (16 bytes an entry: 64 bytes per instrument, 640 KiB for Nasdaq's 10,000 symbols), so
//! that most symbols sit at their home entry. A lookup is one multiply
//! and, in the common case, one 16-byte entry read: about a third of the instructions of
//! the general-purpose hash map it replaced, which probes groups of control bytes first
//! (see the README, "Instruments by symbol").

use crate::types::Symbol;

/// An empty entry's instrument (instrument ids are below `u16::MAX`).
const EMPTY: u16 = u16::MAX;

/// Fibonacci hashing's multiplier: 2^64 divided by the golden ratio, odd.
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// Instrument ids by symbol, fixed at construction.
#[derive(Debug)]
pub struct SymbolTable {
    /// `(symbol key, instrument)`; `instrument == EMPTY`: a free entry. Length a power of
    /// two, at least four times the number of symbols (and 16).
    entries: Box<[(u64, u16)]>,
    /// `entries.len() - 1`.
    mask: usize,
    /// `64 - log2(entries.len())`: the hash is the product's top bits.
    shift: u32,
}

impl SymbolTable {
    /// The table of `symbols`, whose positions are their instrument ids. Errs on a
    /// duplicate symbol (naming it) or on `u16::MAX` symbols or more.
    pub fn new(symbols: &[Symbol]) -> Result<SymbolTable, String> {
        if symbols.len() >= usize::from(EMPTY) {
            return Err(format!(
                "{} instruments: at most {} are supported",
                symbols.len(),
                EMPTY - 1
            ));
        }
        let len = (symbols.len() * 4).next_power_of_two().max(16);
        let mut table = SymbolTable {
            entries: vec![(0, EMPTY); len].into_boxed_slice(),
            mask: len - 1,
            shift: 64 - len.trailing_zeros(),
        };
        for (id, symbol) in symbols.iter().enumerate() {
            let key = symbol.key();
            let mut at = table.home(key);
            loop {
                let (k, i) = table.entries[at];
                if i == EMPTY {
                    table.entries[at] = (key, id as u16);
                    break;
                }
                if k == key {
                    return Err(format!("duplicate symbol {symbol}"));
                }
                at = (at + 1) & table.mask;
            }
        }
        Ok(table)
    }

    /// The entry a key's probe starts at.
    #[inline(always)]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(MULTIPLIER) >> self.shift) as usize
    }

    /// The instrument id of `symbol`, if it is one of the table's.
    #[inline]
    pub fn get(&self, symbol: Symbol) -> Option<u16> {
        let key = symbol.key();
        let mut at = self.home(key);
        // At most a quarter of the entries are taken: the probe meets a free one.
        loop {
            let (k, id) = self.entries[at];
            if k == key && id != EMPTY {
                return Some(id);
            }
            if id == EMPTY {
                return None;
            }
            at = (at + 1) & self.mask;
        }
    }

    /// Bytes allocated.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn symbol(name: &str) -> Symbol {
        Symbol::from_str_padded(name).unwrap()
    }

    /// Every symbol of tables from 0 to 20,000 symbols is found with its id, and symbols
    /// not in them are not, agreeing with a standard map (sizes where the table is full to
    /// its limit and where probes wrap around the end).
    #[test]
    fn finds_every_symbol_and_no_other() {
        for n in [0usize, 1, 3, 4, 5, 8, 100, 1_000, 20_000] {
            let names: Vec<Symbol> = (0..n).map(|i| symbol(&format!("S{i}"))).collect();
            let table = SymbolTable::new(&names).unwrap();
            let model: HashMap<u64, u16> = names
                .iter()
                .enumerate()
                .map(|(i, s)| (s.key(), i as u16))
                .collect();
            for (i, s) in names.iter().enumerate() {
                assert_eq!(table.get(*s), Some(i as u16), "{s} of {n}");
            }
            for i in 0..2 * n + 10 {
                let s = symbol(&format!("X{i}"));
                assert_eq!(table.get(s), model.get(&s.key()).copied());
                assert_eq!(table.get(s), None);
            }
            assert!(table.entries.len() >= 4 * n);
        }
    }

    /// Keys that share their home entry probe past each other, including a key equal to
    /// a free entry's placeholder (0).
    #[test]
    fn colliding_keys_and_the_zero_key() {
        let zero = Symbol([0; 8]);
        assert_eq!(zero.key(), 0);
        let probe = SymbolTable::new(&[]).unwrap();
        // Symbols with the same home entry in a 16-entry table.
        let home = probe.home(symbol("A").key());
        let mut same = vec![symbol("A")];
        for i in 0.. {
            let s = symbol(&format!("B{i}"));
            if probe.home(s.key()) == home {
                same.push(s);
                if same.len() == 3 {
                    break;
                }
            }
        }
        let table = SymbolTable::new(&same).unwrap();
        assert_eq!(table.entries.len(), 16);
        for (i, s) in same.iter().enumerate() {
            assert_eq!(table.get(*s), Some(i as u16));
        }
        assert_eq!(table.get(zero), None);
        let with_zero = SymbolTable::new(&[symbol("A"), zero]).unwrap();
        assert_eq!(with_zero.get(zero), Some(1));
        assert_eq!(with_zero.get(symbol("A")), Some(0));
    }

    #[test]
    fn a_duplicate_symbol_is_refused() {
        let err = SymbolTable::new(&[symbol("AAPL"), symbol("MSFT"), symbol("AAPL")]).unwrap_err();
        assert!(err.contains("duplicate symbol AAPL"), "{err}");
    }
}
