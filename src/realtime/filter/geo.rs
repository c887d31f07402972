//! Geopoints, distances and shapes for the geo keywords (PROTOCOL.md §7.1).

use serde_json::Value;

/// Mean Earth radius used for great-circle distances (CN-32).
const EARTH_RADIUS_M: f64 = 6_371_008.8;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn valid(lat: f64, lon: f64) -> Option<Point> {
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some(Point { lat, lon })
}

/// `[lat, lon]`, `"lat, lon"`, a geohash, `{lat, lon}`, or `{latLon|lat_lon: <any of these>}`.
pub fn parse_point(value: &Value) -> Option<Point> {
    match value {
        Value::Array(items) if items.len() == 2 => valid(number(&items[0])?, number(&items[1])?),
        Value::String(text) => match text.split_once(',') {
            Some((lat, lon)) => valid(lat.trim().parse().ok()?, lon.trim().parse().ok()?),
            None => decode_geohash(text),
        },
        Value::Object(map) => {
            if let Some(inner) = map.get("latLon").or_else(|| map.get("lat_lon")) {
                return if map.len() == 1 {
                    parse_point(inner)
                } else {
                    None
                };
            }
            if map.len() != 2 {
                return None;
            }
            valid(number(map.get("lat")?)?, number(map.get("lon")?)?)
        }
        _ => None,
    }
}

const GEOHASH_ALPHABET: &[u8] = b"0123456789bcdefghjkmnpqrstuvwxyz";

/// The centre of a geohash cell; geohashes have at least 4 characters.
fn decode_geohash(hash: &str) -> Option<Point> {
    if hash.len() < 4
        || !hash
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    {
        return None;
    }
    let (mut lat, mut lon) = ((-90.0f64, 90.0f64), (-180.0f64, 180.0f64));
    let mut even = true;
    for byte in hash.bytes() {
        let bits = GEOHASH_ALPHABET.iter().position(|&c| c == byte)?;
        for shift in (0..5).rev() {
            let bit = (bits >> shift) & 1 == 1;
            let range = if even { &mut lon } else { &mut lat };
            let mid = (range.0 + range.1) / 2.0;
            if bit {
                range.0 = mid;
            } else {
                range.1 = mid;
            }
            even = !even;
        }
    }
    valid((lat.0 + lat.1) / 2.0, (lon.0 + lon.1) / 2.0)
}

/// A distance such as `"1km"`, `"3 280,8 ft"` or `"200"` (metres), in metres.
pub fn parse_distance(value: &Value) -> Option<f64> {
    let text = match value {
        Value::Number(n) => return n.as_f64().filter(|d| *d >= 0.0),
        Value::String(s) => s,
        _ => return None,
    };
    let cleaned: String = text
        .chars()
        .filter(|c| *c != ' ' && *c != '-')
        .map(|c| if c == ',' { '.' } else { c })
        .collect();
    let split = cleaned
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(cleaned.len());
    let (number, unit) = cleaned.split_at(split);
    let amount: f64 = number.parse().ok()?;
    let metres_per_unit = unit_in_metres(&unit.to_ascii_lowercase())?;
    Some(amount * metres_per_unit)
}

fn unit_in_metres(unit: &str) -> Option<f64> {
    let base = |name: &str| -> Option<f64> {
        Some(match name {
            "" | "m" | "meter" | "meters" | "metre" | "metres" => 1.0,
            "ft" | "feet" | "foot" => 0.3048,
            "in" | "inch" | "inches" => 0.0254,
            "yd" | "yard" | "yards" => 0.9144,
            "mi" | "mile" | "miles" => 1609.344,
            _ => return None,
        })
    };
    if let Some(factor) = base(unit) {
        return Some(factor);
    }
    const PREFIXES: &[(&str, &str, f64)] = &[
        ("k", "kilo", 1e3),
        ("h", "hecto", 1e2),
        ("da", "deca", 1e1),
        ("d", "deci", 1e-1),
        ("c", "centi", 1e-2),
        ("m", "milli", 1e-3),
    ];
    PREFIXES.iter().find_map(|(short, long, factor)| {
        let rest = unit
            .strip_prefix(long)
            .or_else(|| unit.strip_prefix(short))?;
        (!rest.is_empty())
            .then(|| base(rest))
            .flatten()
            .map(|b| b * factor)
    })
}

/// Great-circle distance in metres (haversine).
pub fn distance(a: Point, b: Point) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundingBox {
    pub top: f64,
    pub left: f64,
    pub bottom: f64,
    pub right: f64,
}

impl BoundingBox {
    pub fn contains(&self, p: Point) -> bool {
        let lat_ok = p.lat <= self.top && p.lat >= self.bottom;
        let lon_ok = if self.left <= self.right {
            p.lon >= self.left && p.lon <= self.right
        } else {
            // The box crosses the antimeridian.
            p.lon >= self.left || p.lon <= self.right
        };
        lat_ok && lon_ok
    }
}

/// `{top, left, bottom, right}` or `{topLeft|top_left, bottomRight|bottom_right}`.
pub fn parse_box(value: &Value) -> Option<BoundingBox> {
    let map = value.as_object()?;
    if map.len() == 4 {
        let get = |k: &str| map.get(k).and_then(number);
        let b = BoundingBox {
            top: get("top")?,
            left: get("left")?,
            bottom: get("bottom")?,
            right: get("right")?,
        };
        return (b.top >= b.bottom).then_some(b);
    }
    if map.len() == 2 {
        let top_left = parse_point(map.get("topLeft").or_else(|| map.get("top_left"))?)?;
        let bottom_right =
            parse_point(map.get("bottomRight").or_else(|| map.get("bottom_right"))?)?;
        let b = BoundingBox {
            top: top_left.lat,
            left: top_left.lon,
            bottom: bottom_right.lat,
            right: bottom_right.lon,
        };
        return (b.top >= b.bottom).then_some(b);
    }
    None
}

/// Ray casting on the (lon, lat) plane; the polygon is closed automatically.
pub fn polygon_contains(points: &[Point], p: Point) -> bool {
    let mut inside = false;
    let mut j = points.len() - 1;
    for i in 0..points.len() {
        let (a, b) = (points[i], points[j]);
        if (a.lat > p.lat) != (b.lat > p.lat)
            && p.lon < (b.lon - a.lon) * (p.lat - a.lat) / (b.lat - a.lat) + a.lon
        {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_point_format() {
        let p = Point {
            lat: 43.6,
            lon: 3.9,
        };
        assert_eq!(parse_point(&json!([43.6, 3.9])), Some(p));
        assert_eq!(parse_point(&json!("43.6, 3.9")), Some(p));
        assert_eq!(parse_point(&json!({"lat": 43.6, "lon": 3.9})), Some(p));
        assert_eq!(parse_point(&json!({"lat": "43.6", "lon": "3.9"})), Some(p));
        assert_eq!(parse_point(&json!({"latLon": [43.6, 3.9]})), Some(p));
        assert_eq!(parse_point(&json!({"lat_lon": "43.6,3.9"})), Some(p));
        let hashed = parse_point(&json!("spfb05ngm")).unwrap();
        assert!(
            (hashed.lat - 43.6108).abs() < 0.0001 && (hashed.lon - 3.8767).abs() < 0.0001,
            "{hashed:?}"
        );
        for bad in [
            json!("abc"),
            json!([1]),
            json!({"lat": 1}),
            json!([100, 0]),
            json!(true),
            json!("ailo"),
        ] {
            assert_eq!(parse_point(&bad), None, "{bad}");
        }
    }

    #[test]
    fn distances_in_every_unit() {
        assert_eq!(parse_distance(&json!("1km")), Some(1000.0));
        assert_eq!(parse_distance(&json!("200")), Some(200.0));
        assert_eq!(parse_distance(&json!("2 kilometers")), Some(2000.0));
        assert!((parse_distance(&json!("3 280,8 ft")).unwrap() - 999.988).abs() < 0.001);
        assert!((parse_distance(&json!("1 mile")).unwrap() - 1609.344).abs() < 1e-9);
        assert!((parse_distance(&json!("12in")).unwrap() - 0.3048).abs() < 1e-9);
        assert_eq!(parse_distance(&json!("5 parsecs")), None);
        assert_eq!(parse_distance(&json!("far")), None);
    }

    #[test]
    fn haversine_and_shapes() {
        let montpellier = Point {
            lat: 43.6108,
            lon: 3.8767,
        };
        let paris = Point {
            lat: 48.8566,
            lon: 2.3522,
        };
        let d = distance(montpellier, paris);
        assert!((d - 595_000.0).abs() < 5_000.0, "{d}");
        let b = BoundingBox {
            top: 50.0,
            left: 0.0,
            bottom: 40.0,
            right: 10.0,
        };
        assert!(b.contains(paris) && b.contains(montpellier));
        assert!(!b.contains(Point {
            lat: 51.0,
            lon: 2.0
        }));
        let square = [
            Point { lat: 0.0, lon: 0.0 },
            Point {
                lat: 0.0,
                lon: 10.0,
            },
            Point {
                lat: 10.0,
                lon: 10.0,
            },
            Point {
                lat: 10.0,
                lon: 0.0,
            },
        ];
        assert!(polygon_contains(&square, Point { lat: 5.0, lon: 5.0 }));
        assert!(!polygon_contains(
            &square,
            Point {
                lat: 15.0,
                lon: 5.0
            }
        ));
    }
}
