//! The reference model: a deliberately simple, obviously correct matcher.
//!
//! All live orders sit in one `Vec`; the best order is found by scanning it with an
//! explicit priority key (price, displayed before hidden, time counter). Nothing is pooled
//! or linked, so the fast [`Matcher`](super::Matcher) can be checked against it on random
//! command streams: both must produce identical events and identical [`BookView`]s.
//! It is slow (O(orders) per step) and only for tests and fuzzing.

use std::cmp::Reverse;

use super::message::*;
use super::{BandRemainder, BookConfig, RefRule, StpMode};
use crate::types::*;

/// One resting order as both matchers report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestingView {
    /// Venue order reference.
    pub order_id: OrderId,
    /// Feed reference of the displayed part.
    pub md_ref: OrderId,
    /// Owner.
    pub owner: OwnerId,
    /// Client reference.
    pub user_ref: UserRef,
    /// Side.
    pub side: Side,
    /// Price.
    pub price: Price,
    /// Open shares.
    pub open: u32,
    /// Displayed shares.
    pub shown: u32,
    /// Hidden.
    pub hidden: bool,
    /// Shares executed by the replace chain.
    pub executed: u32,
}

/// Every book in priority order, plus the counters that must agree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookView {
    /// Per instrument: bids then asks, each best first.
    pub sides: Vec<[Vec<RestingView>; 2]>,
    /// Per instrument: band reference price.
    pub references: Vec<Price>,
    /// Per owner: last reference consumed.
    pub last_refs: Vec<u64>,
    /// Next venue order reference.
    pub next_order_id: u64,
    /// Next match number.
    pub next_match_id: u64,
    /// Per instrument: the trading state in force.
    pub states: Vec<TradingState>,
    /// Where the trading day stands.
    pub phase: DayPhase,
    /// Per instrument: when its circuit-breaker pause ends, ns since midnight (0: none).
    pub pauses: Vec<u64>,
}

#[derive(Clone, Copy, Debug)]
struct RefOrder {
    view: RestingView,
    instrument: usize,
    /// Time priority: a fresh counter value whenever the order goes to the back.
    time: u64,
    max_floor: u32,
    firm: Firm,
    echo: Echo,
    day_only: bool,
    /// Good till time: expire time in ns since midnight; 0 for other orders.
    expires_at: u64,
}

impl RefOrder {
    /// Smaller is better within one side.
    fn priority(&self) -> (Reverse<u64>, u64, bool, u64) {
        let p = self.view.price.0;
        let rank = match self.view.side.book_side() {
            BookSide::Bid => (Reverse(p), 0),
            BookSide::Ask => (Reverse(0), p),
        };
        (rank.0, rank.1, self.view.hidden, self.time)
    }

    fn tradable(&self) -> u32 {
        if self.view.hidden {
            self.view.open
        } else {
            self.view.shown
        }
    }
}

/// The simple matcher. Same interface and rules as [`Matcher`](super::Matcher).
#[derive(Debug)]
pub struct ReferenceMatcher {
    config: BookConfig,
    orders: Vec<RefOrder>,
    references: Vec<Price>,
    last_refs: Vec<u64>,
    next_id: u64,
    next_match: u64,
    next_time: u64,
    events: Vec<Event>,
    ts: Timestamp,
    phase: DayPhase,
    venue_halted: bool,
    /// Per instrument: its own trading state.
    states: Vec<TradingState>,
    /// Per instrument: when its circuit-breaker pause ends (0: none).
    pauses: Vec<u64>,
    /// Per instrument with a breaker: `(second, price)` of its trades, oldest first; of
    /// those before its window only the last is kept.
    trades: Vec<Vec<(u64, Price)>>,
}

struct Taker {
    owner: OwnerId,
    user_ref: UserRef,
    id: OrderId,
    instrument: usize,
    side: Side,
    firm: Firm,
    /// Where it rests.
    limit: Price,
    /// The worst price it may trade at (its limit, or the band edge before it).
    reach: Price,
    /// It may not trade at a better price than this either (the band's other edge).
    guard: Price,
    left: u32,
    executed: u32,
    market: bool,
    tif: TimeInForce,
    hidden: bool,
    min_qty: u32,
    max_floor: u32,
    echo: Echo,
}

impl ReferenceMatcher {
    /// A model with empty books.
    pub fn new(config: &BookConfig) -> ReferenceMatcher {
        ReferenceMatcher {
            config: config.clone(),
            orders: Vec::new(),
            references: config.instruments.iter().map(|i| i.ref_price).collect(),
            last_refs: vec![0; config.owners.len()],
            next_id: 1,
            next_match: 1,
            next_time: 0,
            events: Vec::new(),
            ts: Timestamp(0),
            phase: if config.scheduled {
                DayPhase::Closed
            } else {
                DayPhase::Unscheduled
            },
            venue_halted: false,
            states: vec![TradingState::Trading; config.instruments.len()],
            pauses: vec![0; config.instruments.len()],
            trades: vec![Vec::new(); config.instruments.len()],
        }
    }

    /// Applies one command, appending its events to `out`.
    pub fn apply(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        self.ts = cmd.ts;
        self.events.clear();
        self.expire_due();
        self.resume_due();
        let owner = cmd.owner;
        if let CommandBody::Venue(venue) = cmd.body {
            self.venue(venue);
        } else if usize::from(owner.0) >= self.config.owners.len() {
            let user_ref = match &cmd.body {
                CommandBody::New(o) => Some(o.user_ref),
                CommandBody::Cancel { user_ref, .. }
                | CommandBody::Modify { user_ref, .. }
                | CommandBody::MassCancel { user_ref, .. }
                | CommandBody::GatewayReject { user_ref, .. }
                | CommandBody::InvalidReplace { user_ref, .. } => Some(*user_ref),
                CommandBody::Replace(r) => Some(r.user_ref),
                CommandBody::Disconnect | CommandBody::AccountQuery | CommandBody::Venue(_) => None,
            };
            if let Some(user_ref) = user_ref {
                self.reject(owner, user_ref, RejectReason::UnknownOwner, [b' '; 14]);
            }
        } else {
            match cmd.body {
                CommandBody::New(o) => self.new_order(owner, &o),
                CommandBody::Cancel { user_ref, qty } => self.cancel(owner, user_ref, qty.0),
                CommandBody::Replace(r) => self.replace(owner, &r),
                CommandBody::InvalidReplace {
                    orig_user_ref,
                    user_ref,
                    reason,
                    clordid,
                } => self.invalid_replace(owner, orig_user_ref, user_ref, reason, clordid),
                CommandBody::Modify {
                    user_ref,
                    side,
                    qty,
                } => self.modify(owner, user_ref, side, qty.0),
                CommandBody::MassCancel {
                    user_ref,
                    firm,
                    symbol,
                    side,
                } => self.mass_cancel(owner, user_ref, firm, symbol, side),
                CommandBody::AccountQuery => {
                    let last = self.last_refs[usize::from(owner.0)];
                    let next = UserRef(last.saturating_add(1).min(u64::from(u32::MAX)));
                    self.emit(EventBody::AccountQueried {
                        owner,
                        next_user_ref: next,
                    });
                }
                CommandBody::GatewayReject {
                    user_ref,
                    reason,
                    clordid,
                } => self.reject(owner, user_ref, reason, clordid),
                CommandBody::Disconnect => {
                    if self.config.owners[usize::from(owner.0)].cancel_on_disconnect {
                        self.cancel_all(owner, None, None, CancelReason::Disconnect);
                    }
                }
                CommandBody::Venue(_) => unreachable!("handled above"),
            }
        }
        out.extend_from_slice(&self.events);
    }

    /// Good-till-time orders whose time has come, earliest first, then older first.
    fn expire_due(&mut self) {
        let mut due: Vec<(u64, OrderId)> = self
            .orders
            .iter()
            .filter(|o| o.expires_at != 0 && o.expires_at <= self.ts.0)
            .map(|o| (o.expires_at, o.view.order_id))
            .collect();
        due.sort();
        for (_, id) in due {
            let i = self
                .orders
                .iter()
                .position(|o| o.view.order_id == id)
                .unwrap_or_else(|| unreachable!());
            self.cut(i, 0, CancelReason::Expired);
        }
    }

    /// Paused instruments whose pause has ended resume, in instrument order; the trading
    /// action goes out unless the venue halt holds them.
    fn resume_due(&mut self) {
        for i in 0..self.pauses.len() {
            if self.pauses[i] != 0 && self.pauses[i] <= self.ts.0 {
                self.pauses[i] = 0;
                self.states[i] = TradingState::Trading;
                if !self.venue_halted {
                    self.emit(EventBody::TradingAction {
                        instrument: InstrumentId(i as u16),
                        state: TradingState::Trading,
                        reason: *b"    ",
                    });
                }
            }
        }
    }

    /// The second a trade now counts in for `instrument`'s breaker: the command's, but
    /// never before its last trade's.
    fn breaker_second(&self, instrument: usize) -> u64 {
        let last = self.trades[instrument].last().map_or(0, |t| t.0);
        (self.ts.0 / 1_000_000_000).max(last)
    }

    /// Whether a trade at `price` now would print outside `instrument`'s breaker range:
    /// centred on the mean price of its trades in the `N` whole seconds before this one,
    /// else its last trade before this second, else `ref_price`.
    fn breaker_trips(&self, instrument: usize, price: Price) -> bool {
        let spec = &self.config.instruments[instrument];
        if spec.breaker_bps == 0 {
            return false;
        }
        let second = self.breaker_second(instrument);
        let from = second.saturating_sub(u64::from(spec.breaker_window_secs));
        let trades = &self.trades[instrument];
        let window: Vec<u128> = trades
            .iter()
            .filter(|t| t.0 >= from && t.0 < second)
            .map(|t| u128::from(t.1.0))
            .collect();
        let mean = if window.is_empty() {
            trades
                .iter()
                .rev()
                .find(|t| t.0 < second)
                .map_or(spec.ref_price.0, |t| t.1.0)
        } else {
            (window.iter().sum::<u128>() / window.len() as u128) as u64
        };
        let half = mean * u64::from(spec.breaker_bps) / 10_000;
        price.0 < mean.saturating_sub(half) || price.0 > mean + half
    }

    /// Keeps a trade for the breaker, forgetting trades no window will need again.
    fn record_trade(&mut self, instrument: usize, price: Price) {
        let spec = &self.config.instruments[instrument];
        if spec.breaker_bps == 0 {
            return;
        }
        let second = self.breaker_second(instrument);
        let from = second.saturating_sub(u64::from(spec.breaker_window_secs));
        let trades = &mut self.trades[instrument];
        trades.push((second, price));
        if let Some(last_old) = trades.iter().rposition(|t| t.0 < from) {
            trades.drain(..last_old);
        }
    }

    fn state_of(&self, instrument: usize) -> TradingState {
        if self.venue_halted {
            TradingState::Halted
        } else {
            self.states[instrument]
        }
    }

    fn open_for(&self, instrument: usize, tif: TimeInForce) -> Result<(), RejectReason> {
        if !tif.accepted_in(self.phase) {
            return Err(RejectReason::Closed);
        }
        match self.state_of(instrument) {
            TradingState::Halted | TradingState::Paused => Err(RejectReason::Halted),
            _ => Ok(()),
        }
    }

    /// Quotation only: an order that would cross is rejected as halted.
    fn quotation_check(
        &self,
        instrument: usize,
        side: Side,
        limit: Price,
    ) -> Result<(), RejectReason> {
        let contra = side.book_side().opposite();
        let crosses = self
            .best(instrument, contra)
            .is_some_and(|b| Self::crosses(contra, self.orders[b].view.price, limit));
        if self.state_of(instrument) == TradingState::QuotationOnly && crosses {
            return Err(RejectReason::Halted);
        }
        Ok(())
    }

    /// Cancels every order `select` picks, by owner, then order of entry.
    fn cancel_selected(&mut self, reason: CancelReason, select: impl Fn(&RefOrder) -> bool) -> u32 {
        let mut keys: Vec<(OwnerId, OrderId)> = self
            .orders
            .iter()
            .filter(|o| select(o))
            .map(|o| (o.view.owner, o.view.order_id))
            .collect();
        keys.sort();
        for (_, id) in &keys {
            let i = self
                .orders
                .iter()
                .position(|o| o.view.order_id == *id)
                .unwrap_or_else(|| unreachable!());
            self.cut(i, 0, reason);
        }
        keys.len() as u32
    }

    fn venue(&mut self, command: VenueCommand) {
        match command {
            VenueCommand::Timer => {}
            VenueCommand::SystemEvent(event) => {
                self.phase = event.phase_after();
                self.emit(EventBody::SystemEvent { event });
                match event {
                    DayEvent::EndOfMarketHours => {
                        self.cancel_selected(CancelReason::Closed, |o| o.day_only);
                    }
                    DayEvent::EndOfSystemHours | DayEvent::EndOfMessages => {
                        self.cancel_selected(CancelReason::Closed, |_| true);
                    }
                    _ => {}
                }
            }
            VenueCommand::Operator { request, action } => {
                let outcome = self.operator(action);
                self.emit(EventBody::OperatorDone { request, outcome });
            }
        }
    }

    fn operator(&mut self, action: OperatorAction) -> OperatorOutcome {
        match action {
            OperatorAction::SetState {
                symbol,
                state,
                reason,
                cancel_resting,
            } => {
                let Some(i) = self.instrument_of(symbol) else {
                    return OperatorOutcome::UnknownSymbol;
                };
                self.states[i] = state;
                self.pauses[i] = 0;
                self.emit(EventBody::TradingAction {
                    instrument: InstrumentId(i as u16),
                    state: self.state_of(i),
                    reason,
                });
                let canceled = if cancel_resting {
                    self.cancel_selected(CancelReason::Halted, |o| o.instrument == i)
                } else {
                    0
                };
                OperatorOutcome::Done { canceled }
            }
            OperatorAction::VenueHalt(on) => {
                let before: Vec<TradingState> =
                    (0..self.states.len()).map(|i| self.state_of(i)).collect();
                self.venue_halted = on;
                for (i, was) in before.into_iter().enumerate() {
                    let now = self.state_of(i);
                    if now != was {
                        self.emit(EventBody::TradingAction {
                            instrument: InstrumentId(i as u16),
                            state: now,
                            reason: if on { *b"O1  " } else { *b"    " },
                        });
                    }
                }
                OperatorOutcome::Done { canceled: 0 }
            }
            OperatorAction::CancelUser(owner) => {
                if usize::from(owner.0) >= self.config.owners.len() {
                    return OperatorOutcome::UnknownUser;
                }
                let canceled = self.cancel_all(owner, None, None, CancelReason::Supervisory);
                OperatorOutcome::Done { canceled }
            }
            OperatorAction::CancelInstrument(symbol) => {
                let Some(i) = self.instrument_of(symbol) else {
                    return OperatorOutcome::UnknownSymbol;
                };
                let canceled =
                    self.cancel_selected(CancelReason::Supervisory, |o| o.instrument == i);
                OperatorOutcome::Done { canceled }
            }
        }
    }

    fn emit(&mut self, body: EventBody) {
        self.events.push(Event { ts: self.ts, body });
    }

    fn reject(
        &mut self,
        owner: OwnerId,
        user_ref: UserRef,
        reason: RejectReason,
        clordid: [u8; 14],
    ) {
        self.emit(EventBody::Rejected {
            owner,
            user_ref,
            reason,
            clordid,
        });
    }

    fn fresh_id(&mut self) -> OrderId {
        self.next_id += 1;
        OrderId(self.next_id - 1)
    }

    fn fresh_time(&mut self) -> u64 {
        self.next_time += 1;
        self.next_time
    }

    fn instrument_of(&self, symbol: Symbol) -> Option<usize> {
        self.config
            .instruments
            .iter()
            .position(|i| i.symbol == symbol)
    }

    fn find(&self, owner: OwnerId, user_ref: UserRef) -> Option<usize> {
        self.orders
            .iter()
            .position(|o| o.view.owner == owner && o.view.user_ref == user_ref)
    }

    /// The best resting order on `side` of `instrument`, if any.
    fn best(&self, instrument: usize, side: BookSide) -> Option<usize> {
        (0..self.orders.len())
            .filter(|&i| {
                self.orders[i].instrument == instrument
                    && self.orders[i].view.side.book_side() == side
            })
            .min_by_key(|&i| self.orders[i].priority())
    }

    fn crosses(resting_side: BookSide, resting: Price, limit: Price) -> bool {
        match resting_side {
            BookSide::Bid => resting >= limit,
            BookSide::Ask => resting <= limit,
        }
    }

    fn levels_in_use(&self, except: Option<usize>) -> usize {
        let mut keys: Vec<(usize, BookSide, Price)> = (0..self.orders.len())
            .filter(|i| Some(*i) != except)
            .map(|i| {
                (
                    self.orders[i].instrument,
                    self.orders[i].view.side.book_side(),
                    self.orders[i].view.price,
                )
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys.len()
    }

    #[allow(clippy::too_many_arguments)]
    fn validate(
        &self,
        instrument: usize,
        side: Side,
        qty: u32,
        price: Option<Price>,
        tif: TimeInForce,
        post_only: bool,
        min_qty: u32,
        max_floor: u32,
        hidden: bool,
    ) -> Result<(Price, Price, Price), RejectReason> {
        if let TimeInForce::Gtt { expire_secs } = tif
            && !(1..86_400).contains(&expire_secs)
        {
            return Err(RejectReason::InvalidExpireTime);
        }
        let spec = &self.config.instruments[instrument];
        // The band, around the last trade; off: no edges at all.
        let reference = self.references[instrument].0;
        let half = reference * u64::from(spec.band_bps) / 10_000;
        let band = (spec.band_bps > 0).then_some((
            Price(reference.saturating_sub(half)),
            Price(reference + half),
        ));
        // The fat-finger range, around the start-of-day price; off: the price range.
        let ff = u64::from(spec.fat_finger_bps);
        let centre = spec.ref_price.0;
        let (ff_low, ff_high) = if ff == 0 {
            (spec.min_price, spec.max_price)
        } else {
            (
                Price(centre.saturating_sub(centre * ff / 10_000)),
                Price(centre + centre * ff / 10_000),
            )
        };
        if qty == 0 {
            return Err(RejectReason::ZeroQty);
        }
        if !qty.is_multiple_of(spec.lot) {
            return Err(RejectReason::QtyOffLot);
        }
        if qty > spec.max_qty {
            return Err(RejectReason::QtyAboveMax);
        }
        let buy = side == Side::Buy;
        let tick = spec.tick.0;
        let (limit, reach) = match (price, band) {
            (Some(p), _) if p < spec.min_price || p > spec.max_price => {
                return Err(RejectReason::PriceOutOfRange);
            }
            (Some(p), _) if p.0 % tick != 0 => return Err(RejectReason::PriceOffTick),
            (Some(p), _) if p < ff_low || p > ff_high => {
                return Err(RejectReason::PriceOutsideBand);
            }
            // Through the band: it trades up to the band edge, a tick inside it.
            (Some(p), Some((_, high))) if buy && p > high => (p, Price(high.0 / tick * tick)),
            (Some(p), Some((low, _))) if !buy && p < low => (p, Price(low.0.div_ceil(tick) * tick)),
            (Some(p), _) => (p, p),
            (None, Some((_, high))) if buy => (high, high),
            (None, Some((low, _))) => (low, low),
            (None, None) if buy => (ff_high, ff_high),
            (None, None) => (ff_low, ff_low),
        };
        let guard = match band {
            Some((low, _)) if buy => low,
            Some((_, high)) => high,
            None if buy => Price(0),
            None => Price(u64::MAX),
        };
        if min_qty > qty || !min_qty.is_multiple_of(spec.lot) {
            return Err(RejectReason::InvalidMinQty);
        }
        if !max_floor.is_multiple_of(spec.lot) || (max_floor > 0 && hidden) {
            return Err(RejectReason::InvalidMaxFloor);
        }
        if post_only {
            if tif == TimeInForce::Ioc || price.is_none() {
                return Err(RejectReason::PostOnlyCannotRest);
            }
            let contra = side.book_side().opposite();
            if let Some(b) = self.best(instrument, contra)
                && Self::crosses(contra, self.orders[b].view.price, limit)
            {
                return Err(RejectReason::PostOnlyWouldTake);
            }
        }
        Ok((limit, reach, guard))
    }

    /// Capacity for an order that could rest at `prices.0` (or, if the band may reprice
    /// it, at its band edge `prices.1`), as if order `replacing` were gone.
    fn capacity(
        &self,
        instrument: usize,
        side: Side,
        prices: (Price, Price, Price),
        replacing: Option<usize>,
    ) -> Result<(), RejectReason> {
        let live = self.orders.len() - usize::from(replacing.is_some());
        if live >= self.config.orders_max as usize {
            return Err(RejectReason::OrderPoolFull);
        }
        let level_exists = |price: Price| {
            (0..self.orders.len()).any(|i| {
                Some(i) != replacing
                    && self.orders[i].instrument == instrument
                    && self.orders[i].view.side.book_side() == side.book_side()
                    && self.orders[i].view.price == price
            })
        };
        let (limit, reach, _) = prices;
        let may_reprice = self.config.instruments[instrument].band_remainder == BandRemainder::Rest
            && reach != limit;
        let needs_level = !level_exists(limit) || (may_reprice && !level_exists(reach));
        if needs_level && self.levels_in_use(replacing) >= self.config.levels_max as usize {
            return Err(RejectReason::LevelPoolFull);
        }
        Ok(())
    }

    /// Whether `owner` may use `user_ref` for a new order (with OUCH's rule, using it
    /// up): above every one before ([`RefRule::Ouch`]), or no live order's key
    /// ([`RefRule::Keys`]).
    fn take_ref(&mut self, owner: OwnerId, user_ref: UserRef) -> bool {
        match self.config.refs {
            RefRule::Ouch => {
                let last = &mut self.last_refs[usize::from(owner.0)];
                if user_ref.0 <= *last {
                    return false;
                }
                *last = user_ref.0;
                true
            }
            RefRule::Keys => self.find(owner, user_ref).is_none(),
        }
    }

    fn new_order(&mut self, owner: OwnerId, o: &NewOrder) {
        if !self.take_ref(owner, o.user_ref) {
            return self.reject(
                owner,
                o.user_ref,
                RejectReason::DuplicateUserRef,
                o.echo.clordid,
            );
        }
        let Some(instrument) = self.instrument_of(o.symbol) else {
            return self.reject(
                owner,
                o.user_ref,
                RejectReason::UnknownInstrument,
                o.echo.clordid,
            );
        };
        if let Err(reason) = self.open_for(instrument, o.tif) {
            return self.reject(owner, o.user_ref, reason, o.echo.clordid);
        }
        let mut result = self.validate(
            instrument,
            o.side,
            o.qty.0,
            o.price,
            o.tif,
            o.post_only,
            o.min_qty.0,
            o.max_floor.0,
            o.hidden,
        );
        if let Ok((limit, _, _)) = result
            && let Err(reason) = self.quotation_check(instrument, o.side, limit)
        {
            result = Err(reason);
        }
        if let Ok(prices) = result
            && o.tif != TimeInForce::Ioc
            && o.price.is_some()
            && let Err(reason) = self.capacity(instrument, o.side, prices, None)
        {
            result = Err(reason);
        }
        let (limit, reach, guard) = match result {
            Ok(prices) => prices,
            Err(reason) => return self.reject(owner, o.user_ref, reason, o.echo.clordid),
        };
        let id = self.fresh_id();
        self.emit(EventBody::Accepted {
            owner,
            order: OrderAck {
                user_ref: o.user_ref,
                order_id: id,
                instrument: InstrumentId(instrument as u16),
                side: o.side,
                qty: o.qty,
                price: o.price.unwrap_or_default(),
                tif: o.tif,
                hidden: o.hidden,
                post_only: o.post_only,
                min_qty: o.min_qty,
                max_floor: o.max_floor,
                firm: o.firm,
                echo: o.echo,
            },
        });
        let taker = Taker {
            owner,
            user_ref: o.user_ref,
            id,
            instrument,
            side: o.side,
            firm: o.firm,
            limit,
            reach,
            guard,
            left: o.qty.0,
            executed: 0,
            market: o.price.is_none(),
            tif: o.tif,
            hidden: o.hidden,
            min_qty: o.min_qty.0,
            max_floor: o.max_floor.0,
            echo: o.echo,
        };
        self.take_then_rest(taker, None);
    }

    /// Contra orders the taker could trade with now, in priority order.
    fn crossing_contra(&self, t: &Taker) -> Vec<usize> {
        let contra = t.side.book_side().opposite();
        let mut v: Vec<usize> = (0..self.orders.len())
            .filter(|&i| {
                let o = &self.orders[i];
                o.instrument == t.instrument
                    && o.view.side.book_side() == contra
                    && Self::crosses(contra, o.view.price, t.reach)
            })
            .collect();
        v.sort_by_key(|&i| self.orders[i].priority());
        v
    }

    /// Whether the band forbids a trade at `price` on the side the taker would not
    /// expect: below its lower edge for a buy, above its upper edge for a sell.
    fn beyond_guard(t: &Taker, price: Price) -> bool {
        if t.side == Side::Buy {
            price < t.guard
        } else {
            price > t.guard
        }
    }

    fn take_then_rest(&mut self, mut t: Taker, md_replace_of: Option<OrderId>) {
        let contra = t.side.book_side().opposite();
        // Whether it would cross the book at its limit, as it stands on entry.
        let crosses = self
            .best(t.instrument, contra)
            .is_some_and(|b| Self::crosses(contra, self.orders[b].view.price, t.limit));
        let crossing = self.crossing_contra(&t);
        let mut meets_min = true;
        let stp = self.config.stp_of(usize::from(t.owner.0));
        if t.min_qty > 0 {
            // Where the sweep will stop at an order of the taker's firm (self-trade
            // prevention that cancels the taker): if that order is displayed, a reserve
            // order ahead of it at its price trades only its displayed part, since its
            // refill goes to the back of the displayed queue, behind that order.
            let stops = |o: &RefOrder| {
                o.firm == t.firm && stp != StpMode::None && stp != StpMode::CancelResting
            };
            let stop_price = crossing
                .iter()
                .map(|&i| &self.orders[i])
                .find(|o| stops(o))
                .filter(|o| !o.view.hidden)
                .map(|o| o.view.price);
            let mut sum: u64 = 0;
            for &i in &crossing {
                let o = &self.orders[i];
                if Self::beyond_guard(&t, o.view.price) {
                    break;
                }
                if o.firm == t.firm && stp != StpMode::None {
                    if stp == StpMode::CancelResting {
                        continue;
                    }
                    break;
                }
                // The sweep would pause the instrument here.
                if self.breaker_trips(t.instrument, o.view.price) {
                    break;
                }
                sum += u64::from(if Some(o.view.price) == stop_price && !o.view.hidden {
                    o.view.shown
                } else {
                    o.view.open
                });
            }
            meets_min = crosses && sum >= u64::from(t.min_qty);
        }
        if meets_min {
            self.take(&mut t);
        }
        if t.left == 0 {
            return;
        }
        if t.tif == TimeInForce::Ioc || t.market {
            return self.cancel_taker(&t, CancelReason::Ioc);
        }
        if !meets_min && crosses {
            return self.cancel_taker(&t, CancelReason::CannotExecute);
        }
        // Still crossing after matching: the band stopped it.
        let spec = self.config.instruments[t.instrument];
        let best = self
            .best(t.instrument, contra)
            .map(|b| self.orders[b].view.price);
        if spec.band_bps > 0
            && let Some(best) = best
            && Self::crosses(contra, best, t.limit)
        {
            if spec.band_remainder == BandRemainder::Cancel || Self::crosses(contra, best, t.reach)
            {
                return self.cancel_taker(&t, CancelReason::PriceBand);
            }
            t.limit = t.reach;
            self.emit(EventBody::Repriced {
                owner: t.owner,
                user_ref: t.user_ref,
                price: t.reach,
            });
        }
        self.rest(t, md_replace_of);
    }

    fn cancel_taker(&mut self, t: &Taker, reason: CancelReason) {
        self.emit(EventBody::Canceled {
            owner: t.owner,
            user_ref: t.user_ref,
            order_id: t.id,
            qty: Qty(t.left),
            leaves: Qty(0),
            reason,
        });
    }

    fn take(&mut self, t: &mut Taker) {
        while t.left > 0 {
            let Some(&i) = self.crossing_contra(t).first() else {
                return;
            };
            let maker = self.orders[i];
            // Beyond the band's other edge nothing trades, so nothing is prevented either.
            if Self::beyond_guard(t, maker.view.price) {
                return;
            }
            let stp = self.config.stp_of(usize::from(t.owner.0));
            if maker.firm == t.firm && stp != StpMode::None {
                let prevented = Qty(t.left.min(maker.view.open));
                if stp != StpMode::CancelIncoming {
                    self.emit(EventBody::AiqCanceled {
                        owner: maker.view.owner,
                        user_ref: maker.view.user_ref,
                        order_id: maker.view.order_id,
                        qty: Qty(maker.view.open),
                        prevented,
                        price: maker.view.price,
                        liquidity: if maker.view.hidden {
                            Liquidity::AddedHidden
                        } else {
                            Liquidity::Added
                        },
                    });
                    if !maker.view.hidden {
                        self.emit(EventBody::MdDelete {
                            instrument: InstrumentId(maker.instrument as u16),
                            md_ref: maker.view.md_ref,
                        });
                    }
                    self.orders.remove(i);
                }
                if stp != StpMode::CancelResting {
                    self.emit(EventBody::AiqCanceled {
                        owner: t.owner,
                        user_ref: t.user_ref,
                        order_id: t.id,
                        qty: Qty(t.left),
                        prevented,
                        price: maker.view.price,
                        liquidity: Liquidity::Removed,
                    });
                    t.left = 0;
                }
                continue;
            }
            if self.breaker_trips(t.instrument, maker.view.price) {
                let ts = self.ts.0;
                let spec = &self.config.instruments[t.instrument];
                self.states[t.instrument] = TradingState::Paused;
                self.pauses[t.instrument] = ts + u64::from(spec.breaker_pause_secs) * 1_000_000_000;
                self.emit(EventBody::TradingAction {
                    instrument: InstrumentId(t.instrument as u16),
                    state: TradingState::Paused,
                    reason: *b"LUDP",
                });
                self.cancel_taker(t, CancelReason::CircuitBreaker);
                t.left = 0;
                return;
            }
            self.fill(t, i);
        }
    }

    fn fill(&mut self, t: &mut Taker, i: usize) {
        let qty = t.left.min(self.orders[i].tradable());
        let match_id = MatchId(self.next_match);
        self.next_match += 1;
        t.left -= qty;
        t.executed += qty;
        let m = &mut self.orders[i];
        m.view.open -= qty;
        m.view.executed += qty;
        if !m.view.hidden {
            m.view.shown -= qty;
        }
        let maker = *m;
        let instrument = InstrumentId(maker.instrument as u16);
        self.record_trade(maker.instrument, maker.view.price);
        self.references[maker.instrument] = maker.view.price;
        self.emit(EventBody::Executed {
            owner: maker.view.owner,
            user_ref: maker.view.user_ref,
            order_id: maker.view.order_id,
            qty: Qty(qty),
            price: maker.view.price,
            liquidity: if maker.view.hidden {
                Liquidity::AddedHidden
            } else {
                Liquidity::Added
            },
            match_id,
            leaves: Qty(maker.view.open),
        });
        self.emit(EventBody::Executed {
            owner: t.owner,
            user_ref: t.user_ref,
            order_id: t.id,
            qty: Qty(qty),
            price: maker.view.price,
            liquidity: Liquidity::Removed,
            match_id,
            leaves: Qty(t.left),
        });
        self.emit(if maker.view.hidden {
            EventBody::MdTrade {
                instrument,
                side: maker.view.side.book_side(),
                qty: Qty(qty),
                price: maker.view.price,
                match_id,
            }
        } else {
            EventBody::MdExecute {
                instrument,
                md_ref: maker.view.md_ref,
                qty: Qty(qty),
                price: maker.view.price,
                match_id,
            }
        });
        if maker.view.open == 0 {
            self.orders.remove(i);
        } else if !maker.view.hidden && maker.view.shown == 0 {
            let md_ref = self.fresh_id();
            let time = self.fresh_time();
            let m = &mut self.orders[i];
            m.view.shown = m.max_floor.min(m.view.open);
            m.view.md_ref = md_ref;
            m.time = time;
            let m = *m;
            self.emit(EventBody::Restated {
                owner: m.view.owner,
                user_ref: m.view.user_ref,
                display_qty: Qty(m.view.shown),
                md_ref,
            });
            self.emit(EventBody::MdAdd {
                instrument,
                md_ref,
                side: m.view.side.book_side(),
                qty: Qty(m.view.shown),
                price: m.view.price,
                firm: m.firm,
            });
        }
    }

    fn rest(&mut self, t: Taker, md_replace_of: Option<OrderId>) {
        let shown = if t.hidden {
            0
        } else if t.max_floor > 0 {
            t.max_floor.min(t.left)
        } else {
            t.left
        };
        let time = self.fresh_time();
        self.orders.push(RefOrder {
            view: RestingView {
                order_id: t.id,
                md_ref: t.id,
                owner: t.owner,
                user_ref: t.user_ref,
                side: t.side,
                price: t.limit,
                open: t.left,
                shown,
                hidden: t.hidden,
                executed: t.executed,
            },
            instrument: t.instrument,
            time,
            max_floor: t.max_floor,
            firm: t.firm,
            echo: t.echo,
            day_only: t.tif == TimeInForce::Day,
            expires_at: match t.tif {
                TimeInForce::Gtt { expire_secs } => {
                    self.ts.0 + u64::from(expire_secs) * 1_000_000_000
                }
                _ => 0,
            },
        });
        let instrument = InstrumentId(t.instrument as u16);
        if t.hidden {
            return;
        }
        self.emit(match md_replace_of {
            Some(old) => EventBody::MdReplace {
                instrument,
                old_md_ref: old,
                new_md_ref: t.id,
                qty: Qty(shown),
                price: t.limit,
            },
            None => EventBody::MdAdd {
                instrument,
                md_ref: t.id,
                side: t.side.book_side(),
                qty: Qty(shown),
                price: t.limit,
                firm: t.firm,
            },
        });
    }

    fn locate(
        &mut self,
        owner: OwnerId,
        user_ref: UserRef,
        reply: UserRef,
        clordid: [u8; 14],
    ) -> Option<usize> {
        let found = self.find(owner, user_ref);
        if found.is_none() {
            let used = user_ref.0 != 0 && user_ref.0 <= self.last_refs[usize::from(owner.0)];
            let reason = if used {
                RejectReason::OrderNotLive
            } else {
                RejectReason::UnknownOrder
            };
            self.reject(owner, reply, reason, clordid);
        }
        found
    }

    /// Cancels order `i` down to `keep` open shares.
    fn cut(&mut self, i: usize, keep: u32, reason: CancelReason) {
        let o = self.orders[i];
        let instrument = InstrumentId(o.instrument as u16);
        self.emit(EventBody::Canceled {
            owner: o.view.owner,
            user_ref: o.view.user_ref,
            order_id: o.view.order_id,
            qty: Qty(o.view.open - keep),
            leaves: Qty(keep),
            reason,
        });
        if keep == 0 {
            if !o.view.hidden {
                self.emit(EventBody::MdDelete {
                    instrument,
                    md_ref: o.view.md_ref,
                });
            }
            self.orders.remove(i);
            return;
        }
        let removed_shown = o.view.shown.saturating_sub(keep);
        self.orders[i].view.open = keep;
        self.orders[i].view.shown -= removed_shown;
        if removed_shown > 0 {
            self.emit(EventBody::MdCancel {
                instrument,
                md_ref: o.view.md_ref,
                qty: Qty(removed_shown),
            });
        }
    }

    fn cancel(&mut self, owner: OwnerId, user_ref: UserRef, qty: u32) {
        let Some(i) = self.locate(owner, user_ref, user_ref, [b' '; 14]) else {
            return;
        };
        if !qty.is_multiple_of(self.config.instruments[self.orders[i].instrument].lot) {
            return self.reject(owner, user_ref, RejectReason::QtyOffLot, [b' '; 14]);
        }
        if qty >= self.orders[i].view.open {
            return self.emit(EventBody::CancelRejected { owner, user_ref });
        }
        self.cut(i, qty, CancelReason::UserRequested);
    }

    fn modify(&mut self, owner: OwnerId, user_ref: UserRef, side: Side, qty: u32) {
        let Some(i) = self.locate(owner, user_ref, user_ref, [b' '; 14]) else {
            return;
        };
        let o = self.orders[i];
        let both_sell = side != Side::Buy && o.view.side != Side::Buy;
        if side != o.view.side && !both_sell {
            return self.reject(owner, user_ref, RejectReason::InvalidSide, [b' '; 14]);
        }
        if !qty.is_multiple_of(self.config.instruments[o.instrument].lot) {
            return self.reject(owner, user_ref, RejectReason::QtyOffLot, [b' '; 14]);
        }
        if qty == 0 {
            return self.cut(i, 0, CancelReason::UserRequested);
        }
        let keep = qty.min(o.view.open);
        let removed_shown = o.view.shown.saturating_sub(keep);
        let m = &mut self.orders[i];
        m.view.side = side;
        m.view.open = keep;
        m.view.shown -= removed_shown;
        self.emit(EventBody::Modified {
            owner,
            user_ref,
            side,
            qty: Qty(keep),
        });
        if removed_shown > 0 {
            let instrument = InstrumentId(o.instrument as u16);
            self.emit(EventBody::MdCancel {
                instrument,
                md_ref: o.view.md_ref,
                qty: Qty(removed_shown),
            });
        }
    }

    /// A replace the gateway refused: found and fresh as a replace must be, and the
    /// instrument neither halted nor paused (then rejected as halted, the original kept),
    /// it is rejected and the original canceled.
    fn invalid_replace(
        &mut self,
        owner: OwnerId,
        orig_user_ref: UserRef,
        user_ref: UserRef,
        reason: RejectReason,
        clordid: [u8; 14],
    ) {
        let Some(i) = self.locate(owner, orig_user_ref, user_ref, clordid) else {
            return;
        };
        let fresh = match self.config.refs {
            RefRule::Ouch => user_ref.0 > self.last_refs[usize::from(owner.0)],
            RefRule::Keys => user_ref.0 == orig_user_ref.0 || self.find(owner, user_ref).is_none(),
        };
        if !fresh {
            return self.reject(owner, user_ref, RejectReason::DuplicateUserRef, clordid);
        }
        if matches!(
            self.state_of(self.orders[i].instrument),
            TradingState::Halted | TradingState::Paused
        ) {
            return self.reject(owner, user_ref, RejectReason::Halted, clordid);
        }
        self.reject(owner, user_ref, reason, clordid);
        self.cut(i, 0, CancelReason::ReplaceFailed)
    }

    fn replace(&mut self, owner: OwnerId, r: &ReplaceOrder) {
        let Some(i) = self.locate(owner, r.orig_user_ref, r.user_ref, r.echo.clordid) else {
            return;
        };
        let fresh = match self.config.refs {
            RefRule::Ouch => r.user_ref.0 > self.last_refs[usize::from(owner.0)],
            RefRule::Keys => {
                r.user_ref.0 == r.orig_user_ref.0 || self.find(owner, r.user_ref).is_none()
            }
        };
        if !fresh {
            return self.reject(
                owner,
                r.user_ref,
                RejectReason::DuplicateUserRef,
                r.echo.clordid,
            );
        }
        let orig = self.orders[i];
        if let Err(reason) = self.open_for(orig.instrument, r.tif) {
            return self.reject(owner, r.user_ref, reason, r.echo.clordid);
        }
        let open = r.qty.0.saturating_sub(orig.view.executed);
        let mut result = self.validate(
            orig.instrument,
            orig.view.side,
            open,
            Some(r.price),
            r.tif,
            r.post_only,
            r.min_qty.0,
            r.max_floor.0,
            r.hidden,
        );
        if let Ok(prices) = result
            && r.tif != TimeInForce::Ioc
            && let Err(reason) = self.capacity(orig.instrument, orig.view.side, prices, Some(i))
        {
            result = Err(reason);
        }
        let (limit, reach, guard) = match result {
            Ok(prices) => prices,
            Err(reason) => {
                self.reject(owner, r.user_ref, reason, r.echo.clordid);
                return self.cut(i, 0, CancelReason::ReplaceFailed);
            }
        };
        if let Err(reason) = self.quotation_check(orig.instrument, orig.view.side, limit) {
            return self.reject(owner, r.user_ref, reason, r.echo.clordid);
        }
        if self.config.refs == RefRule::Ouch {
            self.last_refs[usize::from(owner.0)] = r.user_ref.0;
        }
        let contra = orig.view.side.book_side().opposite();
        let marketable = self
            .best(orig.instrument, contra)
            .is_some_and(|b| Self::crosses(contra, self.orders[b].view.price, limit));
        self.orders.remove(i);
        let id = self.fresh_id();
        let echo = Echo {
            capacity: orig.echo.capacity,
            cross_type: orig.echo.cross_type,
            customer_type: orig.echo.customer_type,
            ..r.echo
        };
        self.emit(EventBody::Replaced {
            owner,
            orig_user_ref: orig.view.user_ref,
            order: OrderAck {
                user_ref: r.user_ref,
                order_id: id,
                instrument: InstrumentId(orig.instrument as u16),
                side: orig.view.side,
                qty: Qty(open),
                price: r.price,
                tif: r.tif,
                hidden: r.hidden,
                post_only: r.post_only,
                min_qty: r.min_qty,
                max_floor: r.max_floor,
                firm: orig.firm,
                echo,
            },
        });
        let taker = Taker {
            owner,
            user_ref: r.user_ref,
            id,
            instrument: orig.instrument,
            side: orig.view.side,
            firm: orig.firm,
            limit,
            reach,
            guard,
            left: open,
            executed: orig.view.executed,
            market: false,
            tif: r.tif,
            hidden: r.hidden,
            min_qty: r.min_qty.0,
            max_floor: r.max_floor.0,
            echo,
        };
        let pure_replace =
            !orig.view.hidden && !r.hidden && r.tif != TimeInForce::Ioc && !marketable;
        if pure_replace {
            return self.rest(taker, Some(orig.view.md_ref));
        }
        if !orig.view.hidden {
            let instrument = InstrumentId(orig.instrument as u16);
            self.emit(EventBody::MdDelete {
                instrument,
                md_ref: orig.view.md_ref,
            });
        }
        self.take_then_rest(taker, None);
    }

    fn mass_cancel(
        &mut self,
        owner: OwnerId,
        user_ref: UserRef,
        firm: Firm,
        symbol: Symbol,
        side: Option<Side>,
    ) {
        let ow = usize::from(owner.0);
        if self.config.refs == RefRule::Ouch && !self.take_ref(owner, user_ref) {
            return self.reject(owner, user_ref, RejectReason::DuplicateUserRef, [b' '; 14]);
        }
        if firm != self.config.owners[ow].firm {
            return self.reject(owner, user_ref, RejectReason::FirmNotAuthorized, [b' '; 14]);
        }
        let instrument = if symbol == Symbol::BLANK {
            None
        } else {
            match self.instrument_of(symbol) {
                Some(i) => Some(i),
                None => {
                    return self.reject(
                        owner,
                        user_ref,
                        RejectReason::UnknownInstrument,
                        [b' '; 14],
                    );
                }
            }
        };
        let count = self.cancel_all(
            owner,
            instrument,
            side.map(Side::book_side),
            CancelReason::UserRequested,
        );
        self.emit(EventBody::mass_canceled(
            owner, user_ref, firm, symbol, side, count,
        ));
    }

    fn cancel_all(
        &mut self,
        owner: OwnerId,
        instrument: Option<usize>,
        side: Option<BookSide>,
        reason: CancelReason,
    ) -> u32 {
        let mut ids: Vec<OrderId> = self
            .orders
            .iter()
            .filter(|o| {
                o.view.owner == owner
                    && instrument.is_none_or(|i| i == o.instrument)
                    && side.is_none_or(|s| s == o.view.side.book_side())
            })
            .map(|o| o.view.order_id)
            .collect();
        ids.sort();
        for id in &ids {
            let i = self
                .orders
                .iter()
                .position(|o| o.view.order_id == *id)
                .unwrap_or_else(|| unreachable!());
            self.cut(i, 0, reason);
        }
        ids.len() as u32
    }

    /// The books in priority order.
    pub fn view(&self) -> BookView {
        let mut sides = Vec::new();
        for instrument in 0..self.config.instruments.len() {
            let mut pair: [Vec<RestingView>; 2] = [Vec::new(), Vec::new()];
            for (s, side) in [BookSide::Bid, BookSide::Ask].into_iter().enumerate() {
                let mut list: Vec<&RefOrder> = self
                    .orders
                    .iter()
                    .filter(|o| o.instrument == instrument && o.view.side.book_side() == side)
                    .collect();
                list.sort_by_key(|o| o.priority());
                pair[s] = list.iter().map(|o| o.view).collect();
            }
            sides.push(pair);
        }
        BookView {
            sides,
            references: self.references.clone(),
            last_refs: self.last_refs.clone(),
            next_order_id: self.next_id,
            next_match_id: self.next_match,
            states: (0..self.states.len()).map(|i| self.state_of(i)).collect(),
            phase: self.phase,
            pauses: self.pauses.clone(),
        }
    }
}
