//! State few connections ever have (an enhanced-authentication exchange, a
//! publish rate limit), behind one pointer: every idle connection carries
//! this field, and each of its parts boxed apart would cost it 8 bytes more.

use super::enhanced_auth::EnhancedAuth;
use super::throttle::PublishThrottle;

/// A connection's rarely used state; empty (a null pointer) for most.
#[derive(Debug, Default)]
pub(super) struct Rare(Option<Box<RareState>>);

#[derive(Debug, Default)]
struct RareState {
    auth: Option<EnhancedAuth>,
    throttle: Option<PublishThrottle>,
}

impl Rare {
    /// The enhanced authentication method and exchange, if CONNECT named one.
    pub(super) fn auth(&self) -> Option<&EnhancedAuth> {
        self.0.as_deref()?.auth.as_ref()
    }

    pub(super) fn auth_mut(&mut self) -> Option<&mut EnhancedAuth> {
        self.0.as_deref_mut()?.auth.as_mut()
    }

    pub(super) fn set_auth(&mut self, auth: EnhancedAuth) {
        self.state().auth = Some(auth);
    }

    /// The publish rate limit, if the broker set one.
    pub(super) fn throttle(&self) -> Option<&PublishThrottle> {
        self.0.as_deref()?.throttle.as_ref()
    }

    pub(super) fn throttle_mut(&mut self) -> Option<&mut PublishThrottle> {
        self.0.as_deref_mut()?.throttle.as_mut()
    }

    pub(super) fn set_throttle(&mut self, throttle: Option<PublishThrottle>) {
        match throttle {
            Some(t) => self.state().throttle = Some(t),
            None => {
                if let Some(state) = self.0.as_deref_mut() {
                    state.throttle = None;
                }
            }
        }
    }

    /// True when no part is set (nothing allocated).
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Moves the state out (parking), leaving this empty.
    pub(super) fn take(&mut self) -> Rare {
        Rare(self.0.take())
    }

    fn state(&mut self) -> &mut RareState {
        self.0.get_or_insert_with(Box::default)
    }
}
