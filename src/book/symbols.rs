//! Instruments by symbol: the table each new order, mass cancel and operator action looks
//! its instrument up in.
//!
//! Built once from the configuration and never changed, so it is a plain open-addressed
//! table: a power-of-two array of 16-byte entries, a multiplicative hash of the symbol's 8
//! bytes (the top bits of one multiplication) and linear probing. The multiplier is chosen
//! when the table is built, among a fixed sequence of [`CANDIDATES`], for the fewest
//! symbols away from their home entry. Up to [`SPARSE_MAX`] symbols the table has at least
//! `n² / 4` entries (256 KiB for 256 symbols), so that a candidate leaves none away from
//! home with a chance of about e⁻² or better and the candidates practically always find
//! one; above, it has 8 to 16 entries per symbol (2 MiB for Nasdaq's 10,000 symbols), and
//! a few percent of the symbols sit past their home entry. A lookup of a symbol at home is
//! one multiply, one entry read and one well-predicted branch; probing past the home entry
//! is a separate, cold path. Measured (README, "Instruments by
//! symbol"): the general-purpose hash map before it took 11 more instructions a lookup, and
//! a first version of this table with a fixed multiplier, where one of `book/mixed`'s four
//! symbols sat one entry past its home, mispredicted the probe's branch on about half of
//! all commands.

use crate::types::Symbol;

/// An empty entry's instrument (instrument ids are below `u16::MAX`).
const EMPTY: u16 = u16::MAX;

/// The first candidate multiplier: 2^64 divided by the golden ratio (Fibonacci hashing).
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// Candidate multipliers tried when the table is built.
const CANDIDATES: u64 = 256;

/// Symbols up to which the table is sized for none of them to be away from home.
const SPARSE_MAX: usize = 256;

/// Instrument ids by symbol, fixed at construction.
#[derive(Debug)]
pub struct SymbolTable {
    /// `(symbol key, instrument)`; `instrument == EMPTY`: a free entry. Length a power of
    /// two, at least eight times the number of symbols (and 16; `n² / 4` up to
    /// [`SPARSE_MAX`] symbols).
    entries: Box<[(u64, u16)]>,
    /// `entries.len() - 1`.
    mask: usize,
    /// `64 - log2(entries.len())`: the hash is the product's top bits.
    shift: u32,
    /// The multiplier of the hash (odd).
    multiplier: u64,
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
        let n = symbols.len();
        let sparse = if n <= SPARSE_MAX { n * n / 4 } else { 0 };
        let len = (n * 8).max(sparse).next_power_of_two().max(16);
        let mut best: Option<(usize, SymbolTable)> = None;
        // Candidates: the golden ratio's multiplier, then odd numbers from a fixed
        // sequence (splitmix64), so a configuration always builds the same table.
        let mut state = MULTIPLIER;
        for candidate in 0..CANDIDATES {
            let multiplier = if candidate == 0 {
                MULTIPLIER
            } else {
                state = state.wrapping_add(MULTIPLIER);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) | 1
            };
            let (table, displaced) = SymbolTable::build(symbols, len, multiplier)?;
            if best.as_ref().is_none_or(|(fewest, _)| displaced < *fewest) {
                best = Some((displaced, table));
            }
            if displaced == 0 {
                break;
            }
        }
        Ok(best.expect("at least one candidate").1)
    }

    /// The table of `symbols` with `len` entries and `multiplier`, and how many symbols
    /// are not at their home entry.
    fn build(
        symbols: &[Symbol],
        len: usize,
        multiplier: u64,
    ) -> Result<(SymbolTable, usize), String> {
        let mut table = SymbolTable {
            entries: vec![(0, EMPTY); len].into_boxed_slice(),
            mask: len - 1,
            shift: 64 - len.trailing_zeros(),
            multiplier,
        };
        let mut displaced = 0;
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
            displaced += usize::from(at != table.home(key));
        }
        Ok((table, displaced))
    }

    /// The entry a key's probe starts at.
    #[inline(always)]
    fn home(&self, key: u64) -> usize {
        (key.wrapping_mul(self.multiplier) >> self.shift) as usize
    }

    /// The instrument id of `symbol`, if it is one of the table's.
    #[inline(always)]
    pub fn get(&self, symbol: Symbol) -> Option<u16> {
        let key = symbol.key();
        let home = self.home(key);
        let (k, id) = self.entries[home];
        if k == key && id != EMPTY {
            return Some(id);
        }
        self.probe(key, home)
    }

    /// [`SymbolTable::get`] past the home entry: a symbol displaced by another, or none.
    #[cold]
    #[inline(never)]
    fn probe(&self, key: u64, home: usize) -> Option<u16> {
        let mut at = home;
        // At most an eighth of the entries are taken: the probe meets a free one.
        loop {
            let (k, id) = self.entries[at];
            if id == EMPTY {
                return None;
            }
            if k == key {
                return Some(id);
            }
            at = (at + 1) & self.mask;
        }
    }

    /// Symbols not at their home entry (each costs a lookup the cold probe).
    #[cfg(test)]
    fn displaced(&self) -> usize {
        self.entries
            .iter()
            .enumerate()
            .filter(|&(at, &(k, id))| id != EMPTY && self.home(k) != at)
            .count()
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
            assert!(table.entries.len() >= 8 * n);
            if n <= 100 {
                assert_eq!(table.displaced(), 0, "{n} symbols");
            }
        }
    }

    /// Keys that share their home entry probe past each other (the cold path), including
    /// a key equal to a free entry's placeholder (0).
    #[test]
    fn colliding_keys_and_the_zero_key() {
        let zero = Symbol([0; 8]);
        assert_eq!(zero.key(), 0);
        // Three keys with home entry 0 under a small table's multiplier, built into a
        // table with that multiplier: two of them are past their home, so lookups run
        // the probe past it.
        let names: Vec<Symbol> = (0..20).map(|i| symbol(&format!("C{i}"))).collect();
        let table = SymbolTable::new(&names[..2]).unwrap();
        assert_eq!(table.entries.len(), 16);
        let mut same = Vec::new();
        let mut state = 1u64;
        for i in 0u64.. {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(i);
            let s = Symbol(state.to_be_bytes());
            if same.len() < 3 && table.home(s.key()) == 0 {
                same.push(s);
            }
            if same.len() == 3 {
                break;
            }
        }
        let forced = SymbolTable::build(&same, 16, table.multiplier).unwrap().0;
        assert_eq!(forced.displaced(), 2);
        for (i, s) in same.iter().enumerate() {
            assert_eq!(forced.get(*s), Some(i as u16));
        }
        assert_eq!(forced.get(zero), None);
        let crowded = SymbolTable::new(&names).unwrap();
        for (i, s) in names.iter().enumerate() {
            assert_eq!(crowded.get(*s), Some(i as u16));
        }
        let with_zero = SymbolTable::new(&[symbol("A"), zero]).unwrap();
        assert_eq!(with_zero.get(zero), Some(1));
        assert_eq!(with_zero.get(symbol("A")), Some(0));
        // A table whose multiplier displaces symbols still finds them all, and no other.
        // (Random keys: symbols numbered in sequence spread without collisions.)
        let big: Vec<Symbol> = (0..5_000u64)
            .map(|i| {
                let mut z = i.wrapping_mul(MULTIPLIER);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                Symbol((z ^ (z >> 31)).to_be_bytes())
            })
            .collect();
        let table = SymbolTable::new(&big).unwrap();
        assert!(
            table.displaced() > 0,
            "5,000 random keys in 65,536 entries collide"
        );
        for (i, s) in big.iter().enumerate() {
            assert_eq!(table.get(*s), Some(i as u16));
        }
        assert_eq!(table.get(symbol("E1")), None);
    }

    /// Random tickers (1 to 5 letters, as exchanges list them), sets up to the sparse
    /// limit: every symbol at its home entry; above it, all found and few displaced.
    #[test]
    fn random_tickers_sit_at_home_up_to_the_sparse_limit() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut ticker = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = 1 + (state % 5) as usize;
            let name: String = (0..len)
                .map(|i| char::from(b'A' + ((state >> (8 + 5 * i)) % 26) as u8))
                .collect();
            symbol(&name)
        };
        for n in [50usize, 128, 200, 256, 256, 256, 1_000] {
            let mut names = Vec::new();
            while names.len() < n {
                let s = ticker();
                if !names.contains(&s) {
                    names.push(s);
                }
            }
            let table = SymbolTable::new(&names).unwrap();
            for (i, s) in names.iter().enumerate() {
                assert_eq!(table.get(*s), Some(i as u16));
            }
            if n <= SPARSE_MAX {
                assert_eq!(table.displaced(), 0, "{n} random tickers");
            } else {
                assert!(table.displaced() < n / 10, "{} of {n}", table.displaced());
            }
        }
    }

    #[test]
    fn a_duplicate_symbol_is_refused() {
        let err = SymbolTable::new(&[symbol("AAPL"), symbol("MSFT"), symbol("AAPL")]).unwrap_err();
        assert!(err.contains("duplicate symbol AAPL"), "{err}");
    }
}
