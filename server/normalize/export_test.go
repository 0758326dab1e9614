package normalize

// DecodeFast is the fast path of Decode, for the tests that compare it with
// protojson.
var DecodeFast = decodeFast
