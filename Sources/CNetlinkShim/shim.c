#include "vxa_shim.h"
#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <string.h>

struct vxa_table {
    const struct nlattr **tb;
    uint16_t max;
};

static int vxa_attr_cb(const struct nlattr *attr, void *data) {
    struct vxa_table *t = data;
    uint16_t type = mnl_attr_get_type(attr);
    if (type <= t->max)
        t->tb[type] = attr;
    return MNL_CB_OK;
}

int vxa_parse_attrs(const struct nlmsghdr *nlh, unsigned int offset,
                    const struct nlattr **tb, uint16_t max) {
    struct vxa_table t = { tb, max };
    memset(tb, 0, sizeof(*tb) * ((size_t)max + 1));
    if (nlh->nlmsg_len < mnl_nlmsg_size(offset))
        return -1;
    return mnl_attr_parse(nlh, offset, vxa_attr_cb, &t) == MNL_CB_ERROR ? -1 : 0;
}

int vxa_parse_nested(const struct nlattr *nest, const struct nlattr **tb, uint16_t max) {
    struct vxa_table t = { tb, max };
    memset(tb, 0, sizeof(*tb) * ((size_t)max + 1));
    return mnl_attr_parse_nested(nest, vxa_attr_cb, &t) == MNL_CB_ERROR ? -1 : 0;
}

int vxa_parse_error(const struct nlmsghdr *nlh, int32_t *error, uint32_t *seq,
                    const char **message) {
    const struct nlmsgerr *err;
    const struct nlattr *tb[NLMSGERR_ATTR_MAX + 1];
    unsigned int offset;

    *message = NULL;
    if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(struct nlmsgerr)))
        return -1;
    err = mnl_nlmsg_get_payload(nlh);
    *error = err->error < 0 ? -err->error : err->error;
    *seq = err->msg.nlmsg_seq;
    if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS))
        return 0;
    offset = sizeof(struct nlmsgerr);
    if (!(nlh->nlmsg_flags & NLM_F_CAPPED))
        offset += err->msg.nlmsg_len - sizeof(struct nlmsghdr);
    if (vxa_parse_attrs(nlh, offset, tb, NLMSGERR_ATTR_MAX) == 0 && tb[NLMSGERR_ATTR_MSG] &&
        mnl_attr_validate(tb[NLMSGERR_ATTR_MSG], MNL_TYPE_NUL_STRING) == 0)
        *message = mnl_attr_get_str(tb[NLMSGERR_ATTR_MSG]);
    return 0;
}
