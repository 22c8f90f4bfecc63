# Applied by patch.sh. Lets EndpointSlice and Endpoints addresses be loopback addresses (127.0.0.0/8, ::1).
# The test kubelet gives every pod an address on 127.0.0.0/8, because the test bed must
# never route to any other address, and the API server rejects those in endpoints. This
# drops exactly that one check from ValidateEndpointIP; all other validation is untouched.
/^\tif ip\.IsLoopback() {$/,/^\t}$/d
