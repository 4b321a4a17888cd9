//! The payload of a version-2 `not_primary` reply: where the primary is, as far as the
//! refusing node knows it. 24 bytes.
//!
//! | offset | field      | type       | meaning                                            |
//! |-------:|------------|------------|----------------------------------------------------|
//! |      0 | `family`   | u8         | 4 or 6; anything else is refused as malformed      |
//! |      1 | `reserved` | u8         | zero                                               |
//! |      2 | `port`     | u16        | the primary's port                                 |
//! |      4 | `padding`  | `[u8; 4]`  | zero                                               |
//! |      8 | `ip`       | `[u8; 16]` | IPv4 in the first 4 bytes (the rest zero), or IPv6 |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytemuck::{Pod, Zeroable};

use super::FrameError;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Redirect {
    pub family: u8,
    pub reserved: u8,
    pub port: u16,
    pub padding: [u8; 4],
    pub ip: [u8; 16],
}

const _: () = assert!(size_of::<Redirect>() == 24);

const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

impl Redirect {
    pub fn new(address: SocketAddr) -> Redirect {
        let (family, ip) = match address.ip() {
            IpAddr::V4(ip) => {
                let mut bytes = [0; 16];
                bytes[..4].copy_from_slice(&ip.octets());
                (FAMILY_V4, bytes)
            }
            IpAddr::V6(ip) => (FAMILY_V6, ip.octets()),
        };
        Redirect { family, reserved: 0, port: address.port(), padding: [0; 4], ip }
    }

    /// The address, or why these bytes do not name one. Exactly one encoding is valid for
    /// each address (unused bytes zero), so a decoded redirect re-encodes to its bytes.
    pub fn address(&self) -> Result<SocketAddr, FrameError> {
        let bad = FrameError::BadRedirect { family: self.family };
        if self.reserved != 0 || self.padding != [0; 4] {
            return Err(bad);
        }
        let ip = match self.family {
            FAMILY_V4 if self.ip[4..] == [0; 12] => {
                IpAddr::V4(Ipv4Addr::new(self.ip[0], self.ip[1], self.ip[2], self.ip[3]))
            }
            FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(self.ip)),
            _ => return Err(bad),
        };
        Ok(SocketAddr::new(ip, self.port))
    }
}
