/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic/esp-err.h"
#include "basic/macro.h"

static const struct {
        int code;
        const char *name;
} esp_err_table[] = {
#define E(x) { x, #x }
        E(ESP_OK), { ESP_FAIL_CODE, "ESP_FAIL" },
        E(ESP_ERR_NO_MEM), E(ESP_ERR_INVALID_ARG), E(ESP_ERR_INVALID_STATE), E(ESP_ERR_INVALID_SIZE),
        E(ESP_ERR_NOT_FOUND), E(ESP_ERR_NOT_SUPPORTED), E(ESP_ERR_TIMEOUT), E(ESP_ERR_INVALID_RESPONSE),
        E(ESP_ERR_INVALID_CRC), E(ESP_ERR_INVALID_VERSION), E(ESP_ERR_INVALID_MAC), E(ESP_ERR_NOT_FINISHED),
        E(ESP_ERR_NOT_ALLOWED),
        E(ESP_ERR_NVS_NOT_INITIALIZED), E(ESP_ERR_NVS_NOT_FOUND), E(ESP_ERR_NVS_TYPE_MISMATCH),
        E(ESP_ERR_NVS_READ_ONLY), E(ESP_ERR_NVS_NOT_ENOUGH_SPACE), E(ESP_ERR_NVS_INVALID_NAME),
        E(ESP_ERR_NVS_INVALID_HANDLE), E(ESP_ERR_NVS_REMOVE_FAILED), E(ESP_ERR_NVS_KEY_TOO_LONG),
        E(ESP_ERR_NVS_PAGE_FULL), E(ESP_ERR_NVS_INVALID_STATE), E(ESP_ERR_NVS_INVALID_LENGTH),
        E(ESP_ERR_NVS_NO_FREE_PAGES), E(ESP_ERR_NVS_VALUE_TOO_LONG), E(ESP_ERR_NVS_PART_NOT_FOUND),
        E(ESP_ERR_NVS_NEW_VERSION_FOUND), E(ESP_ERR_NVS_XTS_ENCR_FAILED), E(ESP_ERR_NVS_XTS_DECR_FAILED),
        E(ESP_ERR_NVS_XTS_CFG_FAILED), E(ESP_ERR_NVS_XTS_CFG_NOT_FOUND), E(ESP_ERR_NVS_ENCR_NOT_SUPPORTED),
        E(ESP_ERR_NVS_KEYS_NOT_INITIALIZED), E(ESP_ERR_NVS_CORRUPT_KEY_PART), E(ESP_ERR_NVS_CONTENT_DIFFERS),
        E(ESP_ERR_NVS_WRONG_ENCRYPTION),
        E(ESP_ERR_OTA_PARTITION_CONFLICT), E(ESP_ERR_OTA_SELECT_INFO_INVALID), E(ESP_ERR_OTA_VALIDATE_FAILED),
        E(ESP_ERR_OTA_SMALL_SEC_VER), E(ESP_ERR_OTA_ROLLBACK_FAILED), E(ESP_ERR_OTA_ROLLBACK_INVALID_STATE),
        E(ESP_ERR_OTA_ALREADY_IN_PROGRESS), E(ESP_ERR_OTA_SPI_MODE_MISMATCH),
        E(ESP_ERR_EFUSE), E(ESP_ERR_EFUSE_CNT_IS_FULL), E(ESP_ERR_EFUSE_REPEATED_PROG), E(ESP_ERR_CODING),
        E(ESP_ERR_NOT_ENOUGH_UNUSED_KEY_BLOCKS), E(ESP_ERR_DAMAGED_READING),
        E(ESP_ERR_IMAGE_FLASH_FAIL), E(ESP_ERR_IMAGE_INVALID),
        E(ESP_ERR_HTTP_MAX_REDIRECT), E(ESP_ERR_HTTP_CONNECT), E(ESP_ERR_HTTP_WRITE_DATA),
        E(ESP_ERR_HTTP_FETCH_HEADER), E(ESP_ERR_HTTP_INVALID_TRANSPORT), E(ESP_ERR_HTTP_CONNECTING),
        E(ESP_ERR_HTTP_EAGAIN), E(ESP_ERR_HTTP_CONNECTION_CLOSED), E(ESP_ERR_HTTP_NOT_MODIFIED),
        E(ESP_ERR_HTTP_RANGE_NOT_SATISFIABLE),
        E(ESP_ERR_HTTPS_OTA_IN_PROGRESS),
        E(ESP_ERR_HW_CRYPTO_DS_HMAC_FAIL), E(ESP_ERR_HW_CRYPTO_DS_INVALID_KEY),
        E(ESP_ERR_HW_CRYPTO_DS_INVALID_DIGEST), E(ESP_ERR_HW_CRYPTO_DS_INVALID_PADDING),
#undef E
};

const char *esp_err_to_name(int r) {
        int code = r < 0 ? -r : r;

        if (code == 0)
                return "ESP_OK";
        if (code < 0x100) {
                const char *n = strerrorname_np(code);
                return n ?: "EUNKNOWN";
        }
        for (size_t i = 0; i < ELEMENTSOF(esp_err_table); i++)
                if (esp_err_table[i].code == code)
                        return esp_err_table[i].name;
        return "ESP_ERR_UNKNOWN";
}

const char *esp_err_describe(int r, char *buf, size_t size) {
        int code = r < 0 ? -r : r;
        if (code > 0 && code < 0x100)
                snprintf(buf, size, "%s (%s)", esp_err_to_name(r), strerror(code));
        else
                snprintf(buf, size, "%s (0x%x)", esp_err_to_name(r), code);
        return buf;
}
